package agent

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/gemba-io/gemba/collectors"
)

// TestSourceLive: the feature engine's Options.Live follows the heartbeat state of the collector a
// sample Source names (the collector's own state when it has one), with a one-second memo.
func TestSourceLive(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	plc := newSupervisor(collectors.Spec{Name: "plc"}, nil, Backoff{}, log)
	plc2 := newSupervisor(collectors.Spec{Name: "plc:2"}, nil, Backoff{}, log)
	mq := newSupervisor(collectors.Spec{Name: "mq"}, nil, Backoff{}, log)
	st := &stateColl{state: "running"}
	mq.c = st
	plc.setState("running", nil)
	plc2.setState("backoff", nil)
	mq.setState("running", nil)
	now := time.Unix(1000, 0)
	l := &sourceLive{sups: func() []*supervisor { return []*supervisor{plc, plc2, mq} }, now: func() time.Time { return now }}
	for src, want := range map[string]bool{
		"plc:ns=2;s=parts": true,  // running
		"plc:2:ns=2;s=x":   false, // the longest matching name: plc:2, in backoff
		"mq:site/line/x":   true,  // running, collector connected
		"other:x":          true,  // names no collector
		"":                 true,
	} {
		if got := l.Live(src); got != want {
			t.Errorf("Live(%q) = %v, want %v", src, got, want)
		}
	}
	st.set("reconnecting")
	if !l.Live("mq:t") {
		t.Fatal("state re-read within the memo's second")
	}
	now = now.Add(2 * time.Second)
	if l.Live("mq:t") {
		t.Fatal("a reconnecting collector is live")
	}
}

// stateColl is a collector that only reports a state (the logic under test reads nothing else).
type stateColl struct {
	mu    sync.Mutex
	state string
}

func (c *stateColl) Run(ctx context.Context, _ collectors.Emitter) error {
	<-ctx.Done()
	return nil
}

func (c *stateColl) set(s string) {
	c.mu.Lock()
	c.state = s
	c.mu.Unlock()
}

func (c *stateColl) State() (string, map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, nil
}
