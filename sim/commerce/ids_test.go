package commerce

import (
	"testing"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/sim"
)

// A simulator restarted at once (the same second) must not reuse an identity: the hub would drop
// the new run's events as duplicates while the new run's ledger booked them (JetStream acknowledges
// a duplicate), so ledger and hub would disagree.
func TestRestartWithinASecondKeepsIdentitiesUnique(t *testing.T) {
	plant := sim.DefaultConfig()
	plant.Speed = 3600 // an hour a step: every channel sells
	ids := map[string]int{}
	for run := range 2 {
		s := newSim(t, Config{Plant: plant, NoQueue: true}) // Start: the wall time, as gemba-sim runs it
		for _, ev := range s.Step() {
			id := ev.MsgID()
			if r, ok := ids[id]; ok && r != run {
				t.Fatalf("run %d reuses %s of run %d (run ids %q)", run, id, r, s.Config().RunID)
			}
			ids[id] = run
			if sale, ok := ev.(commerce.Sale); ok {
				if err := commerce.CheckToken(sale.OrderID); err != nil {
					t.Fatalf("order id %q: %v", sale.OrderID, err)
				}
			}
		}
	}
	if len(ids) < 20 {
		t.Fatalf("only %d events: nothing to compare", len(ids))
	}
}
