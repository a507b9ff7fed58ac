package quality

import (
	"strconv"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// Keys are bounded like agent streams: once maxKeys are tracked, those not fed for the log's
// retention (a SKU gone from the catalogue; a replica started now would not know them) make room
// for new ones, rather than every new key going unmonitored for the life of the process.
func TestKeysPastRetentionMakeRoom(t *testing.T) {
	m := open(t, jetStream(t), testConfig(), nil, nil)
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	fold := func(at time.Time, seq uint64, keys ...string) {
		f := folder{m: m, at: at}
		m.mu.Lock()
		defer m.mu.Unlock()
		f.chunk("a1", signal.StreamFeatures, "i1", seq, seq)
		for _, k := range keys {
			f.value("temp", []byte(k), 1, at.UnixNano(), false)
		}
	}
	keys := make([]string, maxKeys)
	for i := range keys {
		keys[i] = "old." + strconv.Itoa(i)
	}
	fold(t0, 1, keys...)
	if _, ok := m.Status("temp", "old.0"); !ok {
		t.Fatal("old.0 not monitored")
	}
	later := t0.Add(m.cfg.Retention() + time.Hour)
	fold(later, 2, "new.0")
	if _, ok := m.Status("temp", "new.0"); !ok {
		t.Fatalf("a new key is not monitored a day after every tracked key was last fed (keys dropped %d)", m.Stats.KeysDropped.Load())
	}
	if _, ok := m.Status("temp", "old.0"); ok {
		t.Error("old.0, not fed for longer than the log's retention, is still tracked")
	}
}

// A hole that never fills (records the agent lost for good) is a gap for the log's retention, not
// for the life of the process: past that a replica started then would not see it (the runs below
// it are gone from the log), so replicas would disagree for good on a key's gap, and a rule gated
// on it would stay held on one replica only. It is given up and counted as lost, as past 256 runs.
func TestHoleGivenUpAfterRetention(t *testing.T) {
	c := &clock{}
	m := open(t, jetStream(t), testConfig(), nil, c)
	t0 := time.Now().UTC()
	fold := func(at time.Time, seq uint64) {
		f := folder{m: m, at: at}
		m.mu.Lock()
		defer m.mu.Unlock()
		f.chunk("a1", signal.StreamFeatures, "i1", seq, seq)
		f.value("temp", []byte("line1.oven.temp"), 1, at.UnixNano(), false)
	}
	fold(t0, 1)
	fold(t0, 3) // 2 never arrives
	c.skip(2 * time.Minute)
	if q, _ := m.Status("temp", "line1.oven.temp"); !q.Gap || q.Missing != 1 {
		t.Fatalf("a hole open 2 min (gap_after 1 min) is not a gap: %+v", q)
	}
	later := t0.Add(m.cfg.Retention() + time.Hour)
	fold(t0.Add(m.cfg.Retention()/2), 4) // the stream goes on (one not fed for the retention is forgotten)
	c.skip(later.Sub(t0))
	fold(later, 5)
	if q, _ := m.Status("temp", "line1.oven.temp"); q.Gap {
		t.Errorf("a hole older than the log's retention still reads as a gap: %+v", q)
	}
	if g := m.Gaps("a1"); len(g) != 1 || len(g[0].Holes) != 0 || g[0].Missing != 1 {
		t.Errorf("gaps %+v, want the hole given up and its record counted missing", g)
	}
}

// Keys that are gone (SKUs out of the catalogue, renamed signals) give their memory back once not
// fed for the log's retention, not only when maxKeys are tracked: a key holds up to its whole ring
// of slices (17 KiB at the defaults) until then.
func TestGoneKeysGiveMemoryBack(t *testing.T) {
	m := open(t, jetStream(t), testConfig(), nil, nil)
	f := &folds{m: m}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range 1000 {
		f.value(t0, "gone."+strconv.Itoa(i), 1)
	}
	f.value(t0.Add(m.cfg.Retention()+time.Hour), "new.0", 1)
	m.mu.RLock()
	n := m.nkeys
	m.mu.RUnlock()
	if n != 1 {
		t.Errorf("%d keys tracked a day after 1000 of them were last fed, want 1", n)
	}
	if l := m.List("temp"); len(l) != 1 || l[0].Key != "new.0" {
		t.Errorf("List: %d keys", len(l))
	}
}

// An agent whose buffer was wiped (a new incarnation) leaves the old incarnation's stream behind,
// holes and all: it is not fed again, so its holes were never given up, and the Gaps API and
// gemba_hub_quality_missing_records{agent} reported them for the life of the process, while a
// replica started after the log's retention knows nothing of them.
func TestOldIncarnationForgottenAfterRetention(t *testing.T) {
	c := &clock{}
	m := open(t, jetStream(t), testConfig(), nil, c)
	fold := func(at time.Time, inc string, seq uint64) {
		f := folder{m: m, at: at}
		m.mu.Lock()
		defer m.mu.Unlock()
		f.chunk("a1", signal.StreamFeatures, inc, seq, seq)
		f.value("temp", []byte("line1.oven.temp"), 1, at.UnixNano(), false)
	}
	t0 := time.Now().UTC()
	fold(t0, "i1", 1)
	fold(t0, "i1", 3) // 2 never arrives; then the buffer is wiped
	fold(t0.Add(time.Second), "i2", 1)
	later := t0.Add(m.cfg.Retention() + time.Hour)
	c.skip(later.Sub(t0))
	fold(later, "i2", 2)
	for _, g := range m.Gaps("a1") {
		if g.Incarnation == "i1" {
			t.Errorf("the old incarnation is still tracked a day after its last message: %+v", g)
		}
	}
	per, miss := m.tally()
	if miss["a1"] != 0 || per["temp"].gap != 0 {
		t.Errorf("missing records of a1: %v, want 0", miss["a1"])
	}
}
