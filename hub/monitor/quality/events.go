package quality

import (
	"strconv"
	"time"
)

// Kinds and states of events.
const (
	KindDrift    = "drift"
	KindBadShare = "bad_share"
	KindStale    = "stale"
	KindGap      = "gap"

	StateBreach    = "breach"
	StateRecovered = "recovered"
)

// Event is a breach or its recovery: for a feature × key (drift, bad share, staleness) or for an
// agent stream (a gap).
type Event struct {
	Kind        string    `json:"kind"`
	State       string    `json:"state"`
	Feature     string    `json:"feature,omitempty"`
	Key         string    `json:"key,omitempty"`
	Agent       string    `json:"agent,omitempty"`
	Stream      string    `json:"stream,omitempty"`
	Incarnation string    `json:"incarnation,omitempty"`
	From        uint64    `json:"from,omitempty"` // a gap's sequences
	To          uint64    `json:"to,omitempty"`
	Time        time.Time `json:"time"` // when it crossed: in event time for drift and bad share
	PSI         float64   `json:"psi,omitempty"`
	KS          float64   `json:"ks,omitempty"`
	KSP         float64   `json:"ks_p,omitempty"`
	BadShare    float64   `json:"bad_share,omitempty"`
	Current     int       `json:"current,omitempty"`   // values in the current window
	Reference   int       `json:"reference,omitempty"` // values in the reference window
	Why         string    `json:"why"`
}

// ID identifies the event the same way on every replica (each folds the same log and raises the
// same events): the decision log stores it once.
func (e Event) ID() string {
	id := "quality:" + e.Kind + ":" + e.State + ":"
	if e.Kind == KindGap {
		return id + e.Agent + ":" + e.Stream + ":" + e.Incarnation + ":" + strconv.FormatUint(e.From, 10)
	}
	return id + e.Feature + ":" + e.Key + ":" + strconv.FormatInt(e.Time.UnixNano(), 10)
}
