package quality

import (
	"context"
	"strconv"
	"time"
)

// Kinds and states of events.
const (
	KindDrift    = "drift"
	KindBadShare = "bad_share"
	KindStale    = "stale"
	KindGap      = "gap"
	// KindStuck: a value unchanged for stuck_after (event time), whatever the reference window says.
	KindStuck = "stuck"

	StateBreach    = "breach"
	StateRecovered = "recovered"
)

// Event is a breach or its recovery: for a feature × key (drift, bad share, staleness, stuck) or for an
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

// emit raises events (queue and report).
func (m *Monitor) emit(evs ...Event) {
	m.mu.Lock()
	lost := m.queue(evs)
	m.mu.Unlock()
	m.report(evs, lost)
}

// queue hands events to the sender and returns those the full queue refused. Called with m.mu
// held, so events raised on the fold and on the clock's check (a gap's recovery and its breach)
// reach the decision log in the order they were raised.
func (m *Monitor) queue(evs []Event) (lost []Event) {
	for _, e := range evs {
		m.Stats.Events.Add(1)
		m.metrics.events.WithLabelValues(e.Kind, e.State).Inc()
		if m.sink == nil {
			continue
		}
		select {
		case m.events <- e:
		default:
			m.Stats.EventsDropped.Add(1)
			lost = append(lost, e)
		}
	}
	return lost
}

// report logs queued events, outside the lock.
func (m *Monitor) report(evs, lost []Event) {
	for _, e := range evs {
		m.log.Info("quality event", "kind", e.Kind, "state", e.State, "feature", e.Feature, "key", e.Key, "agent", e.Agent, "why", e.Why)
	}
	for _, e := range lost {
		m.log.Warn("quality event not recorded: the queue to the decision log is full", "kind", e.Kind, "feature", e.Feature, "key", e.Key)
	}
}

// sendLoop hands events to the sink, one at a time, retrying a failed one a few times; once drain
// is closed, it records what is queued and returns.
func (m *Monitor) sendLoop(ctx context.Context, drain <-chan struct{}) {
	for {
		select {
		case e := <-m.events:
			m.send(ctx, e)
		case <-drain:
			for {
				select {
				case e := <-m.events:
					m.send(ctx, e)
				default:
					return
				}
			}
		}
	}
}

func (m *Monitor) send(ctx context.Context, e Event) {
	if ctx.Err() != nil {
		m.Stats.EventsDropped.Add(1)
		m.log.Warn("quality event not recorded: the monitor closed before it was", "id", e.ID())
		return
	}
	var err error
	for try := 0; try < 3; try++ {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = m.sink.Record(rctx, e)
		cancel()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		m.Stats.SinkErrors.Add(1)
		m.log.Error("quality event not recorded on the decision log", "id", e.ID(), "err", err)
	}
}
