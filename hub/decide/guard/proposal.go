package guard

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Kind is what a proposal asks for.
type Kind string

const (
	Promote Kind = "promote"
	Hold    Kind = "hold"
)

// Input is one value a decision was computed from, with what the state layer knows of its quality.
type Input struct {
	Name       string `json:"name"`
	Stale      bool   `json:"stale,omitempty"`       // older than its feature's max age
	Historical bool   `json:"historical,omitempty"`  // from a historical (backfill) batch
	Partial    bool   `json:"partial,omitempty"`     // a window that was not complete
	BadQuality bool   `json:"bad_quality,omitempty"` // the source marked it bad or uncertain
	Drifting   bool   `json:"drifting,omitempty"`    // the monitor finds its values drifting from their reference
}

// Proposal is one action a rule wants, for one SKU on one channel.
type Proposal struct {
	ID          string    `json:"id"` // DecisionID of the fields below
	RuleVersion string    `json:"rule_version"`
	Rule        string    `json:"rule"`
	SKU         string    `json:"sku"`
	Site        string    `json:"site,omitempty"`
	Channel     string    `json:"channel"`
	Kind        Kind      `json:"kind"`
	Discount    float64   `json:"discount,omitempty"` // percent, promotions only
	Duration    Duration  `json:"duration,omitempty"`
	Time        time.Time `json:"time"` // when the rule decided
	// ExpectedUnits is the forecast of units sold under the promotion (0: unknown); the budget counts
	// it when budget_weight is discount_x_units.
	ExpectedUnits float64 `json:"expected_units,omitempty"`
	// Requester is who (or which rule set's author) asked, so that they cannot approve it themselves.
	Requester string  `json:"requester,omitempty"`
	Inputs    []Input `json:"inputs,omitempty"`
}

// Duration reads and writes as "36h0m0s" in JSON records.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(time.Duration(d).String())), nil
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// TimeBucket is the start of the bucket of width that t falls in (UTC, aligned to the Unix epoch).
// Two evaluations of one rule for one SKU and channel within a bucket are the same decision.
func TimeBucket(t time.Time, width time.Duration) time.Time {
	if width <= 0 {
		return t.UTC()
	}
	return t.UTC().Truncate(width)
}

// DecisionID derives a decision's id from what makes it one decision: every replica evaluating
// the same rule version and rule for the same SKU and channel in the same time bucket gets the same
// id, and the first to claim it in KV owns it. It is 32 lower-case hex digits, valid as a KV key
// token, a Nats-Msg-Id and a webhook idempotency key.
func DecisionID(ruleVersion, rule, sku, channel string, bucket time.Time) string {
	h := sha256.New()
	for _, s := range []string{ruleVersion, rule, sku, channel} {
		// Length-prefixed so that ("ab","c") and ("a","bc") differ.
		h.Write(strconv.AppendInt(nil, int64(len(s)), 10))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	h.Write(strconv.AppendInt(nil, bucket.UTC().UnixNano(), 10))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// ErrInvalid is wrapped by every InputError.
var ErrInvalid = errors.New("invalid proposal")

// InputError names the proposal and the field that is wrong.
type InputError struct {
	ID, Field, Msg string
}

func (e *InputError) Error() string {
	return fmt.Sprintf("guard: proposal %q: %s: %s", e.ID, e.Field, e.Msg)
}

func (e *InputError) Unwrap() error { return ErrInvalid }

func validID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// check refuses proposals no guardrail can judge.
func (p *Proposal) check() error {
	bad := func(field, format string, args ...any) error {
		return &InputError{ID: p.ID, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case !validID(p.ID):
		return bad("id", "must be 1-128 letters, digits, '-' or '_' (see DecisionID)")
	case p.RuleVersion == "":
		return bad("rule_version", "required")
	case p.Rule == "":
		return bad("rule", "required")
	case p.SKU == "" || len(p.SKU) > 256:
		return bad("sku", "required, at most 256 bytes")
	case p.Channel == "" || len(p.Channel) > 64:
		return bad("channel", "required, at most 64 bytes")
	case len(p.Site) > 256:
		return bad("site", "at most 256 bytes")
	case p.Time.IsZero() || p.Time.Year() < 1970 || p.Time.Year() > 2200:
		return bad("time", "required, between 1970 and 2200, got %s", p.Time)
	case math.IsNaN(p.Discount) || math.IsInf(p.Discount, 0) || p.Discount < 0 || p.Discount > 100:
		return bad("discount", "must be a percentage from 0 to 100, got %v", p.Discount)
	case math.IsNaN(p.ExpectedUnits) || math.IsInf(p.ExpectedUnits, 0) || p.ExpectedUnits < 0:
		return bad("expected_units", "must be a finite number ≥ 0, got %v", p.ExpectedUnits)
	case p.Duration < 0:
		return bad("duration", "must not be negative, got %s", time.Duration(p.Duration))
	case len(p.Inputs) > 1000:
		return bad("inputs", "at most 1000, got %d", len(p.Inputs))
	}
	switch p.Kind {
	case Promote:
		if p.Discount <= 0 {
			return bad("discount", "a promotion needs a discount above 0")
		}
		if p.Duration <= 0 {
			return bad("duration", "a promotion needs a positive duration")
		}
	case Hold:
		if p.Discount != 0 {
			return bad("discount", "a hold carries no discount, got %v", p.Discount)
		}
	default:
		return bad("kind", "must be promote or hold, got %q", p.Kind)
	}
	for i, in := range p.Inputs {
		if in.Name == "" {
			return bad(fmt.Sprintf("inputs[%d].name", i), "required")
		}
	}
	return nil
}
