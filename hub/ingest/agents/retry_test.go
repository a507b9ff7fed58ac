package agents

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/ingest/dedup"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// hookedFeatures runs first before its first flush: a failure of the feature log, or of another
// store at that moment.
type hookedFeatures struct {
	*features.Store
	once  sync.Once
	first func() error
}

func (f *hookedFeatures) Flush(ctx context.Context) error {
	var err error
	f.once.Do(func() { err = f.first() })
	if err != nil {
		return err
	}
	return f.Store.Flush(ctx)
}

// backlog is a replica whose inventory clock is four days past t0, so that the production of
// windows around t0 is older than the inventory's horizon: applied unverified, guarded by the done
// markers only.
type backlog struct {
	js   jetstream.JetStream
	inv  *inventory.Store
	logs *testutil.Buffer
}

const backlogWindows = 100 // more than the few ids the inventory keeps of movements older than its horizon

func startBacklog(t *testing.T, first func(js jetstream.JetStream) error) *backlog {
	t.Helper()
	n := natstest.JetStream(t)
	_, js := natstest.Connect(t, n.URL())
	stream(t, js)
	ctx := context.Background()
	fs, err := features.Open(ctx, js, features.Config{Bucket: "F", Definitions: defs}, plant{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fs.Close)
	icfg := inventory.DefaultConfig()
	icfg.Now = func() time.Time { return t0.Add(100 * time.Hour) }
	inv, err := inventory.Open(ctx, js, icfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inv.Close() })
	dd, err := dedup.Open(ctx, js, dedup.Config{Bucket: "DEDUP", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.AckWait = 2 * time.Second
	cfg.Production = []Production{{Signal: "*.pack.parts", Feature: "units"}}
	b := &backlog{js: js, inv: inv, logs: &testutil.Buffer{}}
	c, err := New(cfg, Deps{JS: js, Prefix: "gemba", Dedup: dd, Features: &hookedFeatures{Store: fs, first: func() error { return first(js) }},
		Stock: inv, Placer: plant{}, Logger: slog.New(slog.NewTextHandler(b.logs, nil))}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// One historical message of 100 windows of 1 unit each.
	var fsIn []signal.Feature
	for w := range backlogWindows {
		fsIn = append(fsIn, units("SKU-1", w, 1))
	}
	publish(t, js, 1, true, "", fsIn...)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return b
}

// settled waits until the message is acknowledged, then checks every window was counted once.
func (b *backlog) settled(t *testing.T) {
	t.Helper()
	waitConsumer(t, b.js, "the message applied and acked", func(info *jetstream.ConsumerInfo) bool {
		return info.NumAckPending == 0 && info.NumPending == 0 && info.Delivered.Consumer >= 1
	})
	if p, _ := b.inv.Get("SKU-1", "plant1"); p.Produced != backlogWindows {
		t.Errorf("produced %v, want %d (each window once)", p.Produced, backlogWindows)
	}
}

// TestRetryDoesNotRecountOldProduction: an agent replays a backlog older than the inventory's
// horizon and the feature store fails the batch's flush once. The batch comes back; the production
// it already stored must not be counted again.
func TestRetryDoesNotRecountOldProduction(t *testing.T) {
	b := startBacklog(t, func(jetstream.JetStream) error { return errors.New("feature log unavailable") })
	testutil.WaitFor(t, 30*time.Second, "the failed flush", func() bool { return strings.Contains(b.logs.String(), "feature log unavailable") })
	b.settled(t)
}

// TestDoneMarksRetried: the dedup bucket fails (its stream leader changing, here: the bucket gone
// for a moment) after the batch's stock was moved, when its claims are to be marked done. The
// moved production must not be moved again by a redelivery.
func TestDoneMarksRetried(t *testing.T) {
	b := startBacklog(t, func(js jetstream.JetStream) error {
		return js.DeleteKeyValue(context.Background(), "DEDUP")
	})
	testutil.WaitFor(t, 30*time.Second, "marking done failed", func() bool { return strings.Contains(b.logs.String(), "dedup done") })
	if _, err := dedup.Open(context.Background(), b.js, dedup.Config{Bucket: "DEDUP", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	b.settled(t)
}
