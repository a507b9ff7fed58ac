package mqtt

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/collectors/mqtt/sparkplug"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// refusingEmitter stores like memEmitter; once armed, its next Emit waits for release and then
// refuses the batch (a full or failing buffer).
type refusingEmitter struct {
	memEmitter
	armed   chan struct{} // holds one token while armed
	entered chan struct{}
	release chan struct{}
}

func (e *refusingEmitter) Emit(ctx context.Context, s []signal.Sample) error {
	select {
	case <-e.armed:
		e.entered <- struct{}{}
		select {
		case <-e.release:
		case <-ctx.Done():
			return ctx.Err()
		}
		return errors.New("test: buffer refused the batch")
	default:
	}
	return e.memEmitter.Emit(ctx, s)
}

// TestSparkplugRefusedBatchDoesNotRenameRedeliveredData: the buffer refuses a batch with NDATA
// while a new NBIRTH (which gives the alias to another metric) is mapped behind it. The broker
// redelivers both; the NDATA, sent before the new birth, must be named by the birth it followed,
// not by the one the refused batches had already applied. (mosquitto: mochi resends the messages
// of one second in random order.)
func TestSparkplugRefusedBatchDoesNotRenameRedeliveredData(t *testing.T) {
	b := startMosquittoConf(t, "")
	cfg := testConfig(b.url(), Subscription{Topic: "spBv1.0/plant1/#", Format: FormatSparkplugB})
	cfg.ClientID = "sp-refused"
	cfg.Sparkplug.RebirthOnGap = false
	em := &refusingEmitter{armed: make(chan struct{}, 1), entered: make(chan struct{}), release: make(chan struct{})}
	reg := prometheus.NewRegistry()
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", DataDir: t.TempDir(), Metrics: reg}, em)
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))

	e := &edgeNode{t: t, cl: newPublisher(t, b.url(), "edge"), group: "plant1", node: "n1", now: 1700000000000}
	e.send("NBIRTH", "", metricSpec{name: "bdSeq", dt: sparkplug.Int64, value: uint64(0)},
		metricSpec{name: "Temp", alias: 1, dt: sparkplug.Double, value: 1.0})
	testutil.WaitFor(t, 5*time.Second, "birth", func() bool { return em.count() == 1 })

	em.armed <- struct{}{}
	e.send("NDATA", "", metricSpec{alias: 1, noName: true, value: 10.0})
	<-em.entered // the batch with the NDATA is in Emit, to be refused
	e.seq = 0    // the node restarts with a new alias map
	e.send("NBIRTH", "", metricSpec{name: "bdSeq", dt: sparkplug.Int64, value: uint64(1)},
		metricSpec{name: "Pressure", alias: 1, dt: sparkplug.Double, value: 2.0})
	e.send("NDATA", "", metricSpec{alias: 1, noName: true, value: 20.0})
	testutil.WaitFor(t, 5*time.Second, "the new birth mapped behind the refused batch", func() bool {
		return counterValue(t, reg, "gemba_mqtt_messages_total", nil) == 4
	})
	close(em.release)
	testutil.WaitFor(t, 10*time.Second, "everything redelivered and stored", func() bool { return em.count() == 4 })
	for _, s := range em.all() {
		if v, _ := s.Value.Float(); v == 10 && s.Signal != "plant1.n1.Temp" {
			t.Fatalf("NDATA sent under the first birth stored as %s=10, want plant1.n1.Temp: %s", s.Signal, render(em.all()))
		}
	}
}
