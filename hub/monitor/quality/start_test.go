package quality

import (
	"context"
	"testing"
	"time"
)

// A replica starting on a monitor log whose last message is gone (deleted, or expired between the
// stream's info and the first fetch) is loaded once it has read what the log holds: it waited for
// the last sequence the info named, which never came, and Open hung until its context ended.
func TestOpenWhenTheLastMessageIsGone(t *testing.T) {
	js := jetStream(t)
	cfg := testConfig()
	m := open(t, js, cfg, &sink{}, nil)
	obs := m.Observer()
	a := &agent{id: "a1", inc: "i1"}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 {
		obs.Observe(a.batch(mean("line1.oven.temp", t0.Add(time.Duration(i)*time.Minute), 10)))
		flush(t, obs)
	}
	waitFolded(t, m, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, 3); err != nil {
		t.Fatal(err)
	}
	octx, ocancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ocancel()
	m2, err := Open(octx, js, Options{Config: cfg, Definitions: defs, Sink: &sink{}})
	if err != nil {
		t.Fatalf("a replica starting on a log without its last message: %v", err)
	}
	defer m2.Close()
	if q, ok := m2.Status("temp", "line1.oven.temp"); !ok || q.Values != 2 {
		t.Fatalf("status after the start: %+v %v, want the 2 values the log holds", q, ok)
	}
}
