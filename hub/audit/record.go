package audit

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/gemba-io/gemba/hub/decide/experiment"
	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/hub/decide/rules"
	"github.com/gemba-io/gemba/hub/state/features"
)

// Events of a decision's life; each is one record (Nats-Msg-Id <decision id>:<event>, and
// <decision id>:<event>:<round> for a decision taken again after a suppression by the kill
// switch: see Record.key).
const (
	EventDecided  = "decided"
	EventApproved = "approved"
	EventRejected = "rejected"
	EventExpired  = "expired"
	EventReleased = "released"
	// EventReacquired: a released decision whose delivery was dead-lettered before any of it went
	// out, reserved again for the replay of that dead letter (outcome fired, or held): it acts again.
	EventReacquired = "reacquired"
	// EventDeferred: not decided yet, because an input could not be used (stale, partial,
	// historical, bad quality, drifting); the decision is made once they can, in the same bucket.
	EventDeferred = "deferred"
)

// key tells a decision's records apart: the event, and from the second decision of the id on (a
// suppression by the kill switch is decided again once the switch is reset; guard.Verdict.Round)
// its round, and the replays of its dead-lettered delivery that reserved it again before it
// (Record.Replay). The decision log deduplicates on it (Nats-Msg-Id, History).
func (r *Record) key() string {
	k := r.Event
	if r.Verdict != nil && r.Verdict.Round > 0 {
		k += ":" + strconv.Itoa(r.Verdict.Round)
	}
	if r.Replay > 0 {
		k += ":replay" + strconv.Itoa(r.Replay)
	}
	return k
}

// Outcomes of a record.
const (
	OutcomeFired            = "fired" // a promote acted
	OutcomeHeld             = "held"  // a hold acted
	OutcomeSuppressed       = "suppressed"
	OutcomeAwaitingApproval = "awaiting_approval"
	OutcomeRejected         = "rejected"
	OutcomeExpired          = "expired"
	OutcomeReleased         = "released"
	OutcomeShadow           = "shadow"   // a shadow version's decision: never acted
	OutcomeHeldOut          = "held_out" // in its experiment's holdout: eligible, deliberately not promoted
)

// Outcomes lists every outcome a record may have (what a filter may ask for).
var Outcomes = []string{OutcomeFired, OutcomeHeld, OutcomeSuppressed, OutcomeAwaitingApproval, OutcomeRejected,
	OutcomeExpired, OutcomeReleased, OutcomeShadow, OutcomeHeldOut}

// Modes: which version decided.
const (
	ModeActive = "active"
	ModeCanary = "canary"
	ModeShadow = "shadow"
)

// Modes lists every mode a record may have.
var Modes = []string{ModeActive, ModeCanary, ModeShadow}

// Input is one value a decision read, with where it came from.
type Input struct {
	Name        string    `json:"name"`
	Key         string    `json:"key"`
	Value       float64   `json:"value"`
	WindowStart time.Time `json:"window_start,omitzero"`
	EventTime   time.Time `json:"event_time,omitzero"`
	AgeS        float64   `json:"age_s"`
	Stale       bool      `json:"stale,omitempty"`
	Historical  bool      `json:"historical,omitempty"`
	Partial     bool      `json:"partial,omitempty"`
	BadQuality  bool      `json:"bad_quality,omitempty"`
	Drifting    bool      `json:"drifting,omitempty"`
	// Quality is what the monitor found wrong with the feature's values for this key, in words.
	Quality []string         `json:"quality,omitempty"`
	Lineage features.Lineage `json:"lineage"`
}

// MarshalJSON writes a non-finite value or age as a string ("NaN", "+Inf"): JSON numbers cannot
// hold them, and the record of a decision must encode whatever its inputs held.
func (in Input) MarshalJSON() ([]byte, error) {
	type plain Input
	return json.Marshal(struct {
		plain
		Value any `json:"value"`
		AgeS  any `json:"age_s"`
	}{plain(in), jsonFloat(in.Value), jsonFloat(in.AgeS)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (in *Input) UnmarshalJSON(data []byte) error {
	type plain Input
	var aux struct {
		plain
		Value json.RawMessage `json:"value"`
		AgeS  json.RawMessage `json:"age_s"`
	}
	if err := json.Unmarshal(data, &aux); err != nil {
		return err
	}
	*in = Input(aux.plain)
	var err error
	if in.Value, err = readFloat(aux.Value); err != nil {
		return fmt.Errorf("value: %w", err)
	}
	if in.AgeS, err = readFloat(aux.AgeS); err != nil {
		return fmt.Errorf("age_s: %w", err)
	}
	return nil
}

func jsonFloat(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return f
}

func readFloat(raw json.RawMessage) (float64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return strconv.ParseFloat(s, 64)
	}
	var f float64
	err := json.Unmarshal(raw, &f)
	return f, err
}

// InventoryInput is the SKU's inventory position a decision read, with its times. (A named field
// rather than an embedded rules.Inventory: its MarshalJSON would be promoted and drop the times.)
type InventoryInput struct {
	Inventory    rules.Inventory `json:"inventory"`
	Updated      time.Time       `json:"updated,omitzero"`
	SnapshotTime time.Time       `json:"snapshot_time,omitzero"`
	// MovingAverage is the inventory's own daily rate (sales averaged over its demand window);
	// Forecast, when a model set covered the SKU, is where the rule's days of cover came from.
	MovingAverage float64      `json:"moving_average"`
	Forecast      *ForecastRef `json:"forecast,omitempty"`
	// NotUsed says why a model set's forecast of the SKU was not used (past its horizon, or
	// incomplete: a channel's demand missing), when it had one.
	NotUsed string `json:"forecast_not_used,omitempty"`
}

// ForecastRef names the model set whose forecast gave a decision's days of cover (the days
// themselves are in the inventory input).
type ForecastRef struct {
	Version     string    `json:"version"`
	Methods     []string  `json:"methods"` // the chosen method of each of the SKU's series
	DataTo      time.Time `json:"data_to"` // the end of the data the set was fitted on
	HasInterval bool      `json:"has_interval"`
	// Fallbacks are the channels whose fit failed, counted at their moving average instead, and why.
	Fallbacks []string `json:"fallbacks,omitempty"`
	// Shadow is the shadow model set's cover of the same position, recorded beside the active one's
	// (it decides nothing): its version and days of cover, low and high.
	Shadow *ShadowCover `json:"shadow,omitempty"`
}

// ShadowCover is a shadow model set's days of cover (strings for +Inf, as rules.Inventory writes them).
type ShadowCover struct {
	Version string          `json:"version"`
	Cover   rules.Inventory `json:"cover"` // days_of_cover, _low, _high and daily_rate
}

// RuleSetRef names the version that decided and the rules change it was live under.
type RuleSetRef struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Label     string `json:"label,omitempty"`
	ChangeSeq uint64 `json:"change_seq"` // the fence: the rules change's stream sequence
}

// RuleRef is the rule that decided, with its text.
type RuleRef struct {
	Name     string `json:"name"`
	When     string `json:"when"`
	Index    int    `json:"index"`
	Priority int    `json:"priority,omitempty"`
}

// Disagreement is, on a shadow record, what the active version decided for the same channel.
type Disagreement struct {
	ActiveVersion string        `json:"active_version"`
	ActiveRule    string        `json:"active_rule,omitempty"`
	ActiveAction  *rules.Action `json:"active_action,omitempty"` // nil: the active version decided nothing
}

// CanaryRef says whether the decision's unit fell in the canary.
type CanaryRef struct {
	Version string  `json:"version"`
	Share   float64 `json:"share"`
	By      string  `json:"by"` // sku or site
	Unit    string  `json:"unit"`
	In      bool    `json:"in"`
}

// ExperimentRef is what a decision's experiment did: the unit's holdout draw and, for a bandit,
// the arm chosen with the posterior it came from.
type ExperimentRef struct {
	ID      string                 `json:"id"`
	Holdout *experiment.Assignment `json:"holdout,omitempty"`
	Bandit  *experiment.Choice     `json:"bandit,omitempty"`
}

// Record is one event of one decision on the decision log.
type Record struct {
	DecisionID   string          `json:"decision_id"`
	Event        string          `json:"event"`
	Outcome      string          `json:"outcome"`
	Mode         string          `json:"mode"`
	Time         time.Time       `json:"time"`
	Replica      string          `json:"replica,omitempty"`
	RuleSet      RuleSetRef      `json:"rule_set"`
	Rule         RuleRef         `json:"rule"`
	SKU          string          `json:"sku"`
	Site         string          `json:"site,omitempty"`
	Channel      string          `json:"channel"`
	Action       rules.Action    `json:"action"`
	Inputs       []Input         `json:"inputs,omitempty"`
	Inventory    *InventoryInput `json:"inventory,omitempty"`
	Paths        []string        `json:"paths,omitempty"`
	Trace        []rules.Step    `json:"trace,omitempty"`
	Verdict      *guard.Verdict  `json:"verdict,omitempty"`
	Disagreement *Disagreement   `json:"disagreement,omitempty"`
	Canary       *CanaryRef      `json:"canary,omitempty"`
	Arm          string          `json:"arm,omitempty"`
	Experiment   *ExperimentRef  `json:"experiment,omitempty"`
	Note         string          `json:"note,omitempty"`
	// Replay counts, on a released or reacquired record, the reacquired (released) records before
	// it: a delivery dead-lettered, replayed and dead-lettered again is released and reserved again
	// more than once, each a record of its own.
	Replay int `json:"replay,omitempty"`

	// Seq is the record's stream sequence, filled on read.
	Seq uint64 `json:"seq,omitempty"`
}

// ReleaseStep orders a decision's releases and reservations again: its n-th release (replay n-1) is
// 2n-1, the reacquire answering it (replay n) 2n, any other record 0. Records may be read out of
// order (reconcile writes a release before a slow replica's decided record): a reader keeps the
// latest step it saw and lets a record of an earlier one change nothing; an odd step is released.
func (r *Record) ReleaseStep() int {
	switch r.Event {
	case EventReleased:
		return 2*r.Replay + 1
	case EventReacquired:
		return 2 * r.Replay
	}
	return 0
}

var (
	events   = map[string]bool{EventDecided: true, EventApproved: true, EventRejected: true, EventExpired: true, EventReleased: true, EventDeferred: true, EventReacquired: true}
	outcomes = map[string]bool{OutcomeFired: true, OutcomeHeld: true, OutcomeSuppressed: true, OutcomeAwaitingApproval: true,
		OutcomeRejected: true, OutcomeExpired: true, OutcomeReleased: true, OutcomeShadow: true, OutcomeHeldOut: true}
	modes = map[string]bool{ModeActive: true, ModeCanary: true, ModeShadow: true}
)

// ValidID reports whether id is a decision id: 32 lower-case hex digits.
func ValidID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// check refuses a record the log would not be able to explain; the error names the decision.
func (r *Record) check() error {
	switch {
	case !ValidID(r.DecisionID):
		return fmt.Errorf("audit record: decision id %q is not 32 lower-case hex digits", r.DecisionID)
	case !events[r.Event]:
		return fmt.Errorf("audit record %s: unknown event %q", r.DecisionID, r.Event)
	case !outcomes[r.Outcome]:
		return fmt.Errorf("audit record %s: unknown outcome %q", r.DecisionID, r.Outcome)
	case !modes[r.Mode]:
		return fmt.Errorf("audit record %s: unknown mode %q", r.DecisionID, r.Mode)
	case r.Mode == ModeShadow && r.Outcome != OutcomeShadow:
		return fmt.Errorf("audit record %s: a shadow decision never acts, its outcome is shadow, not %q", r.DecisionID, r.Outcome)
	case r.RuleSet.Version == "":
		return fmt.Errorf("audit record %s: no rule set version", r.DecisionID)
	}
	return nil
}

// Change is one rules change; the last one on the log is the rules state.
type Change struct {
	Seq    uint64      `json:"-"` // stream sequence, filled on read
	Op     string      `json:"op"`
	Active string      `json:"active"`
	Shadow string      `json:"shadow,omitempty"`
	Canary *CanarySpec `json:"canary,omitempty"`
	// Previous are the actives before Active, newest first: what rollback returns to.
	Previous []string  `json:"previous,omitempty"`
	From     string    `json:"from,omitempty"`
	To       string    `json:"to,omitempty"`
	By       string    `json:"by"`
	Why      string    `json:"why,omitempty"`
	At       time.Time `json:"at"`
	// ActiveBy is who made Active the active version (its activate or rollback), whoever made the
	// changes since (a shadow, a canary): the requester of its decisions that wait for approval.
	ActiveBy string `json:"active_by,omitempty"`
}

// CanarySpec is a canary version acting for a share of SKUs or sites.
type CanarySpec struct {
	Version string  `json:"version"`
	Share   float64 `json:"share"`
	By      string  `json:"by"` // sku or site
	// Author is who started the canary: the requester of its decisions that wait for approval.
	Author string `json:"author,omitempty"`
}

// Ops of a change.
const (
	OpActivate    = "activate"
	OpRollback    = "rollback"
	OpShadow      = "shadow"
	OpCanary      = "canary"
	OpClearShadow = "clear-shadow"
	OpClearCanary = "clear-canary"
)

// MaxPrevious bounds Change.Previous: the rollback stack.
const MaxPrevious = 50

var ops = map[string]bool{OpActivate: true, OpRollback: true, OpShadow: true, OpCanary: true, OpClearShadow: true, OpClearCanary: true}

func (c *Change) check() error {
	switch {
	case !ops[c.Op]:
		return fmt.Errorf("rules change: unknown op %q", c.Op)
	case c.By == "":
		return fmt.Errorf("rules change %s: who made it (by) is required", c.Op)
	case len(c.Previous) > MaxPrevious:
		return fmt.Errorf("rules change %s: %d previous versions, at most %d", c.Op, len(c.Previous), MaxPrevious)
	case c.Canary != nil && (c.Canary.Version == "" || !(c.Canary.Share > 0 && c.Canary.Share <= 1) || (c.Canary.By != "sku" && c.Canary.By != "site")):
		return fmt.Errorf("rules change %s: canary needs a version, a share in (0, 1] and by sku or site, got %+v", c.Op, *c.Canary)
	}
	return nil
}
