package quality

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
)

// gatedSink records an event once gate is closed; a Record whose context ends first fails, as a
// publish to the decision log would.
type gatedSink struct {
	gate chan struct{}
	mu   sync.Mutex
	evs  []Event
}

func (s *gatedSink) Record(ctx context.Context, e Event) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-s.gate:
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	s.evs = append(s.evs, e)
	s.mu.Unlock()
	return nil
}

// A hub stopping (a rolling restart) right after breaches were raised still records them: the
// replica that starts next takes them as history and raises none, so with one replica an event
// queued at Close would be lost for good.
func TestCloseRecordsQueuedEvents(t *testing.T) {
	s := &gatedSink{gate: make(chan struct{})}
	m := open(t, jetStream(t), testConfig(), s, nil)
	for i := range 5 {
		m.emit(Event{Kind: KindDrift, State: StateBreach, Feature: "temp", Key: "line" + strconv.Itoa(i) + ".oven.temp", Time: time.Now()})
	}
	closed := make(chan struct{})
	go func() { m.Close(); close(closed) }()
	testutil.WaitFor(t, 5*time.Second, "Close to begin", m.closing.Load)
	close(s.gate)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.evs) != 5 {
		t.Errorf("%d of 5 queued events recorded at Close (dropped %d, sink errors %d)", len(s.evs),
			m.Stats.EventsDropped.Load(), m.Stats.SinkErrors.Load())
	}
}
