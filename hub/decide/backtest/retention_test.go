package backtest

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// A span that starts before what the agents' stream still holds (its retention removed the
// older messages) replays its start without the inputs the hub had then: the summary says so,
// naming the stream, rather than reading as what the rules would have decided. A stream that
// lost nothing says nothing.
func TestBacktestSaysWhatRetentionRemoved(t *testing.T) {
	cfg, _ := testConfig(t)
	js := hubNATS(t, cfg)
	publishHistory(t, js, cfg)
	ctx := context.Background()
	whole, err := Run(ctx, Options{JS: js, Config: cfg, Rules: testSet(t), From: at(9, 0), To: at(14, 0), TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(whole.Warnings) != 0 {
		t.Fatalf("warnings on streams that lost nothing: %q", whole.Warnings)
	}
	st, err := js.Stream(ctx, cfg.Ingest.Stream)
	if err != nil {
		t.Fatal(err)
	}
	// One envelope a minute from 08:51: keep those from 11:00:10 on.
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(131)); err != nil {
		t.Fatal(err)
	}
	sum, err := Run(ctx, Options{JS: js, Config: cfg, Rules: testSet(t), From: at(9, 0), To: at(14, 0), TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Warnings) != 1 || !strings.Contains(sum.Warnings[0], "agents stream "+cfg.Ingest.Stream) ||
		!strings.Contains(sum.Warnings[0], "oldest input read is at 2026-11-20T11:") {
		t.Fatalf("warnings %q; want one naming the agents stream %s and its oldest input (11:xx)", sum.Warnings, cfg.Ingest.Stream)
	}
}

// A long span keeps only the decision ids that can still come again (those of the current time
// bucket, or holdout period): an id of a bucket the replay clock has left is forgotten, so memory
// does not grow with the span. The scripted day decides ids in five buckets; at the end only the
// last bucket's may be held.
func TestBacktestForgetsPastDecisionIDs(t *testing.T) {
	cfg, _ := testConfig(t)
	js := hubNATS(t, cfg)
	publishHistory(t, js, cfg)
	var held, decided int
	inspect = func(r *replay) { held = len(r.decided) + len(r.deferred) + len(r.undeliverable) }
	defer func() { inspect = nil }()
	sum, err := Run(context.Background(), Options{JS: js, Config: cfg, Rules: testSet(t), From: at(9, 0), To: at(14, 0), TempDir: t.TempDir(),
		Out: func(d Decision) {
			if d.Time.Hour() == 13 {
				decided++
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Decisions != 10 || held > decided {
		t.Fatalf("%d decisions; %d ids held at the end, want at most the last bucket's %d", sum.Decisions, held, decided)
	}
}
