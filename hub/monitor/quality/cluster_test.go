package quality

import (
	"context"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// On a 3-node cluster with an R3 monitor log, replicas connected to different nodes, each
// ingesting part of the messages, fold the same state.
func TestClusterReplicasAgree(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	_, js1 := natstest.Connect(t, nodes[0].URL())
	_, js2 := natstest.Connect(t, nodes[2].URL())
	cfg := testConfig()
	cfg.Replicas = 3
	c := &clock{}
	m1 := open(t, js1, cfg, &sink{}, c)
	m2 := open(t, js2, cfg, &sink{}, c)
	// A new R3 stream answers publishes once its leader is elected; a flush before that fails (and
	// the hub would redeliver the batch, which this test does not).
	testutil.WaitFor(t, 30*time.Second, "the monitor log's leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := js1.Stream(ctx, cfg.Stream)
		if err != nil {
			return false
		}
		info, err := st.Info(ctx)
		return err == nil && info.Cluster != nil && info.Cluster.Leader != "" && len(info.Cluster.Replicas) == 2
	})
	a := &agent{id: "a11", inc: "i1"}
	now := time.Now()
	for i := 1; i <= 30; i++ {
		b := a.batch(mean("line11.oven.temp", now.Add(time.Duration(i)*time.Second), float64(i)))
		switch {
		case i == 17:
		case i%3 == 0:
			m1.Observer().Observe(b)
		default:
			m2.Observer().Observe(b)
		}
	}
	flush(t, m1.Observer())
	flush(t, m2.Observer())
	waitFolded(t, m1, 29)
	waitFolded(t, m2, 29)
	c.skip(2 * time.Minute)
	q1, _ := m1.Status("temp", "line11.oven.temp")
	q2, _ := m2.Status("temp", "line11.oven.temp")
	if q1.Values != 29 || q2.Values != 29 || !q1.Gap || !q2.Gap || q1.Missing != 1 || q2.Missing != 1 || !q1.Newest.Equal(q2.Newest) {
		t.Errorf("replicas on different nodes disagree:\n%+v\n%+v", q1, q2)
	}
}
