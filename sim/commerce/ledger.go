package commerce

import (
	"sync"
	"time"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
)

// Ledger records the events the COMMERCE stream acknowledged (a PubAck, or JetStream's word that it
// already held the identity): units sold per SKU × channel and the ERP counts. Every event goes to one
// site (the plant's), so a SKU is a key of the hub's inventory. Tests compare it with the hub's
// inventory, which must hold exactly: OnHand = the newest count, Sold = SoldSinceCount.
type Ledger struct {
	mu     sync.Mutex
	sold   map[[2]string]float64 // (sku, channel) → units
	orders map[[2]string]int
	counts map[string]Count
	after  map[string][]timedQty // sku → acknowledged sales dated after its newest count
	rows   int
	sales  int
}

// Count is the newest acknowledged ERP count of a SKU.
type Count struct {
	SnapshotID string
	OnHand     float64
	Time       time.Time
}

type timedQty struct {
	t time.Time
	q float64
}

func newLedger() *Ledger {
	return &Ledger{sold: map[[2]string]float64{}, orders: map[[2]string]int{}, counts: map[string]Count{}, after: map[string][]timedQty{}}
}

// book records one acknowledged event. The hub's rule is the inventory's: a sale at or before a
// count's time is in the count; the newest count is the one with the greatest (time, id).
func (l *Ledger) book(ev commerce.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch e := ev.(type) {
	case commerce.Sale:
		l.sales++
		k := [2]string{e.SKU, e.Channel}
		l.sold[k] += e.Quantity
		l.orders[k]++
		if c, ok := l.counts[e.SKU]; !ok || e.Time.After(c.Time) {
			l.after[e.SKU] = append(l.after[e.SKU], timedQty{e.Time, e.Quantity})
		}
	case commerce.Snapshot:
		l.rows++
		c, ok := l.counts[e.SKU]
		if ok && (e.Time.Before(c.Time) || e.Time.Equal(c.Time) && e.SnapshotID <= c.SnapshotID) {
			return // older than the count in force: the hub ignores it too
		}
		l.counts[e.SKU] = Count{SnapshotID: e.SnapshotID, OnHand: e.OnHand, Time: e.Time}
		kept := l.after[e.SKU][:0]
		for _, s := range l.after[e.SKU] {
			if s.t.After(e.Time) {
				kept = append(kept, s)
			}
		}
		l.after[e.SKU] = kept
	}
}

// Sold is the units of a SKU sold on a channel (acknowledged sales).
func (l *Ledger) Sold(sku, channel string) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sold[[2]string{sku, channel}]
}

// Orders is the number of acknowledged sales of a SKU on a channel.
func (l *Ledger) Orders(sku, channel string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.orders[[2]string{sku, channel}]
}

// Count is the newest acknowledged count of a SKU.
func (l *Ledger) Count(sku string) (Count, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.counts[sku]
	return c, ok
}

// SoldSinceCount is the units of a SKU sold after its newest acknowledged count (all of them without
// one): what the hub's inventory position subtracts from the count.
func (l *Ledger) SoldSinceCount(sku string) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var q float64
	for _, s := range l.after[sku] {
		q += s.q
	}
	return q
}

// Events is the number of acknowledged sales and count rows.
func (l *Ledger) Events() (sales, rows int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sales, l.rows
}
