package rules

import (
	"strings"
	"sync"
	"testing"
)

func TestCache(t *testing.T) {
	c := NewCache(2)
	v := func(n string) []byte {
		return []byte("name: x\nhit_policy: first\nrules:\n  - name: a\n    when: inventory.on_hand > " + n + "\n    hold: {channels: [web], reason: r}\n")
	}
	a1, err := c.Load(v("1"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if s, err := c.Load(v("1")); err != nil || s != a1 {
				t.Errorf("same text: %p %v, want %p", s, err, a1)
			}
		})
	}
	wg.Wait()
	// Other options or the other environment are another entry.
	if s, _ := c.Load(v("1"), CostLimit(5)); s == a1 {
		t.Error("another cost limit shared the compiled set")
	}
	if s, _ := c.LoadStored(v("1")); s == a1 {
		t.Error("the stored environment shared the strict one's set")
	}
	// Two newer entries pushed the first out: it is compiled again.
	if s, _ := c.Load(v("1")); s == a1 || s.Version() != a1.Version() {
		t.Errorf("evicted entry came back as the same set, or with another version")
	}
	if _, err := c.Load(v("1 +")); err == nil || !strings.Contains(err.Error(), "Syntax error") {
		t.Errorf("bad text: %v", err)
	}
}
