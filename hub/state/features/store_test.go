package features

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// plant is a fixed resolver: line1.press.* and line1.pack.* on line1, line2.pack.* on line2.
type plant map[string][3]string

func (p plant) Place(sig string) (string, string, string, bool) {
	for prefix, pl := range p {
		if len(sig) > len(prefix) && sig[:len(prefix)] == prefix {
			return pl[0], pl[1], pl[2], true
		}
	}
	return "", "", "", false
}

var testPlant = plant{
	"line1.press.": {"press", "line1", "plant1"},
	"line1.pack.":  {"pack1", "line1", "plant1"},
	"line2.pack.":  {"pack2", "line2", "plant2"},
}

var defs = Definitions{
	{Name: "availability", Signal: "*.pack.state", Feature: "availability", Key: ByLine, MaxAge: time.Minute},
	{Name: "units", Signal: "*.pack.parts", Feature: "units", Key: BySKU, MaxAge: time.Minute},
	{Name: "temperature", Signal: "line1.press.temperature", Feature: "mean", Key: BySignal, MaxAge: time.Minute},
}

var t0 = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

func feat(sig, name string, end time.Time, v float64, labels ...string) *signal.Feature {
	f := &signal.Feature{Signal: sig, Name: name, WindowStart: end.Add(-10 * time.Second), WindowEnd: end, Value: v, Count: 10}
	for i := 0; i+1 < len(labels); i += 2 {
		f.Labels = append(f.Labels, signal.Label{Key: labels[i], Value: labels[i+1]})
	}
	return f
}

func in(f *signal.Feature, seq uint64) Input {
	return Input{Feature: f, Lineage: Lineage{Agent: "gw1", Site: "plant1", Incarnation: "ab", ConfigVersion: "cv", FirstSeq: seq, StreamSeq: seq + 100}}
}

func open(t *testing.T, url string) *Store {
	t.Helper()
	_, js := natstest.Connect(t, url)
	s, err := Open(context.Background(), js, Config{Bucket: "F", Definitions: defs}, testPlant, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestApplyFlushGet(t *testing.T) {
	n := natstest.JetStream(t)
	s := open(t, n.URL())
	s.now = func() time.Time { return t0.Add(30 * time.Second) }
	s.Apply([]Input{
		in(feat("line1.pack.state", "availability", t0, 0.8), 1),
		in(feat("line1.pack.parts", "units", t0, 12, "sku", "SKU-1"), 2),
		in(feat("line1.press.temperature", "mean", t0, 71.5), 3),
		in(feat("line1.press.temperature", "max", t0, 80), 4),                    // no definition: unmatched
		in(feat("line9.pack.state", "availability", t0, 1), 5),                   // not in the graph: unresolved
		in(feat("line1.pack.parts", "units", t0, math.NaN(), "sku", "SKU-2"), 6), // non-finite
	})
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, ok := s.Get("availability", "line1")
	if !ok || r.Value.Value != 0.8 || r.Stale || r.Lineage.Agent != "gw1" || r.Lineage.Signal != "line1.pack.state" ||
		r.Lineage.StreamSeq != 101 || r.Lineage.Incarnation != "ab" || r.Revision == 0 || r.DefVersion != defs.Version() {
		t.Fatalf("availability line1 = %+v, %v", r, ok)
	}
	if r, ok := s.Get("units", "SKU-1"); !ok || r.Value.Value != 12 || r.Labels["sku"] != "SKU-1" {
		t.Fatalf("units SKU-1 = %+v, %v", r, ok)
	}
	if _, ok := s.Get("temperature", "line1.press.temperature"); !ok {
		t.Fatal("temperature by signal missing")
	}
	if s.Stats.Unmatched.Load() != 1 || s.Stats.Unresolved.Load() != 1 || s.Stats.NonFinite.Load() != 1 || s.Stats.Applied.Load() != 3 {
		t.Errorf("stats applied %d unmatched %d unresolved %d nonfinite %d", s.Stats.Applied.Load(), s.Stats.Unmatched.Load(),
			s.Stats.Unresolved.Load(), s.Stats.NonFinite.Load())
	}

	// An older window (out of order) or the same message again (re-delivered) never overwrites; a
	// newer one does. (The same window from another message: see TestSameWindowTieBreak.)
	s.Apply([]Input{in(feat("line1.pack.state", "availability", t0.Add(-10*time.Second), 0.1), 7),
		in(feat("line1.pack.state", "availability", t0, 0.2), 1)})
	if r, _ := s.Get("availability", "line1"); r.Value.Value != 0.8 {
		t.Fatalf("older window overwrote: %v", r.Value.Value)
	}
	s.Apply([]Input{in(feat("line1.pack.state", "availability", t0.Add(10*time.Second), 0.5), 9)})
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Get("availability", "line1"); r.Value.Value != 0.5 || r.Lineage.FirstSeq != 9 {
		t.Fatalf("newer window not applied: %+v", r)
	}

	// Stale past max age.
	s.now = func() time.Time { return t0.Add(2 * time.Minute) }
	if r, _ := s.Get("availability", "line1"); !r.Stale {
		t.Fatalf("value 110 s old with max_age 1m reads fresh: %+v", r)
	}

	// A new store (restart, or another replica) loads the bucket.
	s2 := open(t, n.URL())
	if r, ok := s2.Get("availability", "line1"); !ok || r.Value.Value != 0.5 || r.Lineage.FirstSeq != 9 {
		t.Fatalf("after restart: %+v, %v", r, ok)
	}
	if l := s2.List(""); len(l) != 3 {
		t.Fatalf("List: %d values, want 3", len(l))
	}
}

// TestReplicasConverge: two replicas apply interleaved windows of the same keys concurrently;
// the bucket and both views end with the latest window of every key.
func TestReplicasConverge(t *testing.T) {
	n := natstest.JetStream(t)
	a, b := open(t, n.URL()), open(t, n.URL())
	const windows, keys = 200, 5
	var wg sync.WaitGroup
	for r, s := range []*Store{a, b} {
		wg.Go(func() {
			for w := range windows {
				if w%2 != r { // each replica gets every other window, as a shared consumer would hand them out
					continue
				}
				var ins []Input
				for k := range keys {
					ins = append(ins, in(feat("line1.pack.parts", "units", t0.Add(time.Duration(w)*time.Second), float64(w), "sku", fmt.Sprint("SKU-", k)), uint64(w)))
				}
				s.Apply(ins)
				if err := s.Flush(context.Background()); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for k := range keys {
		sku := fmt.Sprint("SKU-", k)
		for name, s := range map[string]*Store{"a": a, "b": b} {
			testutil.WaitFor(t, 10*time.Second, "replica "+name+" converges on "+sku, func() bool {
				r, ok := s.Get("units", sku)
				return ok && r.Value.Value == windows-1
			})
		}
	}
}

func TestDefinitionsValidate(t *testing.T) {
	var cfg struct {
		Features Definitions `yaml:"features"`
	}
	err := config.NewDecoder().Unmarshal([]byte(`features:
  - {name: Bad-Name, signal: "[", feature: "", key: shelf, max_age: 0s}
  - {name: units, signal: a, feature: units, key: sku, max_age: 1m}
  - {name: units, signal: b, feature: units, key: sku, max_age: 1m}
`), &cfg)
	if err == nil {
		t.Fatal("bad definitions accepted")
	}
	for _, want := range []string{"line 2: features[0].name", "features[0].signal: bad pattern", "features[0].feature: required",
		"features[0].key", "features[0].max_age", "line 4: features[2].name: \"units\" is already defined at features[1]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && (s[:len(sub)] == sub || contains(s[1:], sub)))
}

func TestPerHour(t *testing.T) {
	for _, c := range []struct {
		v      float64
		window time.Duration
		want   float64
	}{{30, 10 * time.Minute, 180}, {5, 0, 0}, {12, time.Hour, 12}, {1, -time.Minute, 0}} {
		v := &Value{Value: c.v, WindowStart: t0, WindowEnd: t0.Add(c.window)}
		if got := v.PerHour(); got != c.want {
			t.Errorf("%v units over %s: %v per hour, want %v", c.v, c.window, got, c.want)
		}
	}
}

// A record whose window ends beyond max_future (an agent whose clock is ahead) is refused,
// counted and logged once per agent: stored, it would pin its key until then, since the latest
// window wins and every correct record after it would be "older".
func TestFutureWindowRefused(t *testing.T) {
	n := natstest.JetStream(t)
	s := open(t, n.URL())
	s.now = func() time.Time { return t0 }
	ahead := t0.Add(DefaultMaxFuture + time.Second)
	s.Apply([]Input{
		in(feat("line1.pack.state", "availability", ahead, 0.9), 1),
		in(feat("line1.pack.state", "availability", ahead.Add(time.Hour), 0.9), 2),
		in(feat("line1.pack.parts", "units", t0.Add(DefaultMaxFuture), 3, "sku", "SKU-1"), 3), // within the bound
	})
	if _, ok := s.Get("availability", "line1"); ok {
		t.Fatal("a window ending beyond max_future was stored")
	}
	if s.Stats.Future.Load() != 2 || s.Stats.Applied.Load() != 1 {
		t.Fatalf("future %d applied %d, want 2 and 1", s.Stats.Future.Load(), s.Stats.Applied.Load())
	}
	if len(s.warnFuture) != 1 {
		t.Fatalf("%d agents logged, want gw1 once", len(s.warnFuture))
	}
	s.Apply([]Input{in(feat("line1.pack.state", "availability", t0, 0.7), 4)})
	if r, ok := s.Get("availability", "line1"); !ok || r.Value.Value != 0.7 {
		t.Fatalf("the correct window after the refused ones: %+v, %v", r, ok)
	}
}
