package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// decisionStore is a store of the decision room, as the start checks it.
type decisionStore struct {
	name   string // the bucket's or the stream's name
	key    string // the config key naming it
	bucket bool   // a KV bucket (its stream is KV_<name>)
	// means is what creating it again empty loses.
	means string
	// again: a start creates it again by itself, with a WARN saying what is lost (the actions
	// stream, as the running hub does).
	again bool
}

func (s decisionStore) kind() string {
	if s.bucket {
		return "bucket"
	}
	return "stream"
}

// decisionStores are the decision room's stores in the order openDecisions creates them.
func (c *Config) decisionStores() []decisionStore {
	return []decisionStore{
		{name: c.Audit.Stream, key: "audit.stream", means: "the decision log: the audit trail (every decision's records, what `why` shows) and the " +
			"rules changes are lost, and the active rule version, read from it, falls back to decide.rules (none without it)"},
		{name: c.Rules.Bucket, key: "rules.bucket", bucket: true, means: "the rule versions: those the decision log names (active, shadow, canary, " +
			"rollback) no longer load, and no decision is made until a rule file is activated again (`gemba-hub rules " +
			"activate`; the active one's own file: then restart)"},
		{name: c.Guard.Bucket, key: "guard.bucket", bucket: true, means: "the guard's memory: the day's caps (promotion count and discount budget) " +
			"and every cooldown start again from zero, decisions already decided may be decided and act again, and pending " +
			"approvals and a thrown kill switch are forgotten"},
		{name: c.Act.Bucket, key: "act.bucket", bucket: true, means: "the outbox: which decisions were delivered — reconcile enqueues the " +
			"recent allowed ones again, so they may be delivered twice — and the deliveries in flight (pending, retrying, " +
			"dead-lettered) are forgotten, never delivered nor replayable"},
		{name: c.Act.Stream, key: "act.stream", again: true, means: "the actions stream: the actions published on it before are gone (a NATS " +
			"subscriber that had not read them never will)"},
	}
}

// recreatable are the stores --recreate takes: those a start refuses to create again by itself.
func (c *Config) recreatable() []string {
	var names []string
	for _, s := range c.decisionStores() {
		if !s.again {
			names = append(names, s.name)
		}
	}
	return names
}

// checkRecreate checks Options.Recreate against the config.
func (c *Config) checkRecreate(names []string) error {
	if len(names) == 0 {
		return nil
	}
	if !c.Decisions() {
		return fmt.Errorf("--recreate %s: this config has no decision room (no guard section)", strings.Join(names, ","))
	}
	ok := c.recreatable()
	for _, n := range names {
		if !slices.Contains(ok, n) {
			return fmt.Errorf("--recreate %s: not one of the decision stores a start refuses to create again (%s)", n, strings.Join(ok, ", "))
		}
	}
	return nil
}

// refusedError is a start the hub refuses: openState does not retry it.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

// checkDecisionStores runs before openDecisions creates the decision room's stores. They are
// created together on a first start: none there, or those there hold nothing (a first start
// stopped part way; another replica creating them right now, in the same order: it writes into
// none before all are there). Once any holds something, a missing decision log, rule versions
// bucket, guard bucket or outbox is not created again empty — the start is refused, naming each and
// what its loss means — unless the operator names it in Options.Recreate (gemba-hub run
// --recreate), and then with a WARN. The actions stream is created again with a WARN, as the
// running hub does. The verdict holds for the process: a retried open does not check again.
func (h *Hub) checkDecisionStores(ctx context.Context, js jetstream.JetStream) error {
	if h.storesChecked {
		return nil
	}
	var missing, there []decisionStore
	held := false
	for _, s := range h.cfg.decisionStores() {
		stream := s.name
		if s.bucket {
			stream = "KV_" + s.name
		}
		st, err := js.Stream(ctx, stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			missing = append(missing, s)
			continue
		}
		if err != nil {
			return fmt.Errorf("decision store %s %s: %w", s.kind(), s.name, err)
		}
		there = append(there, s)
		held = held || st.CachedInfo().State.Msgs > 0
	}
	log := h.log.With("component", "decide")
	switch {
	case len(missing) == 0:
	case len(there) == 0:
		log.Info("no decision store on these servers: creating them (first start of the decision room)", "stores", names(missing))
	case !held:
		log.Info("decision stores missing while the others hold nothing: creating them", "missing", names(missing), "there", names(there))
	default:
		var refused []string
		var recreate []decisionStore
		for _, s := range missing {
			switch {
			case s.again || slices.Contains(h.opts.Recreate, s.name):
				recreate = append(recreate, s)
			default:
				refused = append(refused, fmt.Sprintf("%s %s (%s) — %s", s.kind(), s.name, s.key, s.means))
			}
		}
		if len(refused) > 0 {
			var flag []string
			for _, s := range missing {
				if !s.again {
					flag = append(flag, s.name)
				}
			}
			return &refusedError{fmt.Sprintf("decision stores missing while the others hold data, so this is not a first start, "+
				"and nothing was created: %s. Restore them from a backup (or, if the config names another store than "+
				"before, correct it), or accept the loss and start once with `gemba-hub run --recreate %s` "+
				"(docs/hub-operations.md, Where the state lives)",
				strings.Join(refused, "; "), strings.Join(flag, ","))}
		}
		for _, s := range recreate {
			if s.again {
				log.Warn("decision store missing: created again empty, as the running hub does", s.kind(), s.name, "lost", s.means)
			} else {
				log.Warn("decision store created again empty (--recreate)", s.kind(), s.name, "lost", s.means)
			}
		}
	}
	for _, n := range h.opts.Recreate {
		if !slices.ContainsFunc(missing, func(s decisionStore) bool { return s.name == n }) {
			log.Info("--recreate: store is there, nothing created again; remove the flag", "store", n)
		}
	}
	h.storesChecked = true
	return nil
}

func names(ss []decisionStore) []string {
	var n []string
	for _, s := range ss {
		n = append(n, s.name)
	}
	return n
}
