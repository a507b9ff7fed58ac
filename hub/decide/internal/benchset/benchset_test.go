package benchset_test

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/hub/decide/internal/benchset"
	"github.com/gemba-io/gemba/hub/decide/rules"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The set loads as the benchmarks load it, with Size rules, every one a promotion or a hold.
func TestRulesLoad(t *testing.T) {
	s, err := rules.Load(benchset.Rules())
	if err != nil {
		t.Fatal(err)
	}
	rs := s.Rules()
	if len(rs) != benchset.Size {
		t.Fatalf("%d rules, want %d", len(rs), benchset.Size)
	}
	for i, r := range rs {
		want := rules.Promote
		if i%2 == 1 {
			want = rules.Hold
		}
		if r.Action.Kind != want {
			t.Errorf("rule %s: action %v, want %v", r.Name, r.Action.Kind, want)
		}
	}
}

// CPU time grows with work done (a measure that stood still would report every benchmark as free).
func TestCPUTimeGrows(t *testing.T) {
	c0 := benchset.CPUTime()
	if c0 <= 0 {
		t.Fatalf("CPU time %v", c0)
	}
	deadline := time.Now().Add(10 * time.Second)
	for benchset.CPUTime() == c0 {
		if time.Now().After(deadline) {
			t.Fatal("CPU time did not grow while spinning")
		}
		for i := 0; i < 1e6; i++ {
			_ = i * i
		}
	}
}
