package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// keptEvery is how often a replica checks that the decision room's stores are still there.
var keptEvery = 10 * time.Second

// kept is a stream of the decision room that holds history or limits. Deleted while the hub runs
// (an operator's mistake), it is not created again by the running hub: created empty, it would
// silently lose what it held. The replica is not ready, saying which and why, until it is back
// (restored from a backup, or created again empty by a restart with --recreate once an operator
// has decided so: a plain restart refuses to start, see checkDecisionStores).
type kept struct {
	stream, what, loses string
	name                string // the bucket's or the stream's name (--recreate takes it)
}

func (h *Hub) keptStreams(d *decisions) []kept {
	gb := h.cfg.Guard.Bucket
	if gb == "" {
		gb = "GEMBA_GUARD"
	}
	return []kept{
		{d.log.Config().Stream, "decision log", "the audit trail and the rules in force", d.log.Config().Stream},
		{"KV_" + gb, "guard bucket " + gb, "today's caps and budgets, the cooldowns, the kill switch and the approvals", gb},
		{"KV_" + h.cfg.Act.Bucket, "act outbox bucket " + h.cfg.Act.Bucket,
			"which decisions were delivered (reconcile would deliver recent ones again)", h.cfg.Act.Bucket},
	}
}

// checkKept checks the kept streams every keptEvery until ctx ends. Only a definite "not found"
// counts: a JetStream that does not answer is said elsewhere.
func (h *Hub) checkKept(ctx context.Context, d *decisions, log *slog.Logger) {
	ks := h.keptStreams(d)
	missing := map[string]bool{}
	t := time.NewTicker(keptEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, k := range ks {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := d.js.Stream(sctx, k.stream)
			cancel()
			name := "kept " + k.stream
			gone := errors.Is(err, jetstream.ErrStreamNotFound)
			switch was := missing[name]; {
			case gone && !was:
				why := fmt.Sprintf("%s (stream %s) not found, deleted while the hub runs? Not created again: empty, it would "+
					"lose %s; restore it, or restart the hub with --recreate %s to create it empty", k.what, k.stream, k.loses, k.name)
				log.Error("decision room state missing: "+k.what+" not found; not created again", "stream", k.stream, "loses", k.loses)
				d.setWhy(name, why)
				missing[name] = true
			case !gone && was && err == nil:
				log.Warn("decision room state back", "stream", k.stream)
				d.setWhy(name, "")
				delete(missing, name)
			}
		}
	}
}
