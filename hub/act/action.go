// Package act delivers the hub's actions exactly once per decision: a KV outbox that every replica's
// delivery loop drains, publishing on the ACTIONS stream and calling Standard Webhooks per channel.
package act

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Kind is what an action does.
type Kind string

const (
	// Promote starts a promotion (and, once its end has passed, ends it with its own message).
	Promote Kind = "promote"
	// Hold stops promoting a SKU on a channel.
	Hold Kind = "hold"
)

// Event tells a receiver which message of an action it is reading.
const (
	EventStart = "start"
	EventEnd   = "end"
)

// Action is one decision to act on. DecisionID is the idempotency key everywhere: the outbox key,
// the NATS Nats-Msg-Id and the webhook-id (with ":end" for the end of a promotion).
type Action struct {
	DecisionID     string    `json:"decision_id"`
	Kind           Kind      `json:"kind"`
	SKU            string    `json:"sku"`
	Site           string    `json:"site,omitempty"`
	Channel        string    `json:"channel"`
	Discount       float64   `json:"discount,omitempty"`
	Audience       string    `json:"audience,omitempty"`
	Start          time.Time `json:"start"`
	End            time.Time `json:"end,omitzero"`
	Reason         string    `json:"reason,omitempty"`
	RuleSetVersion string    `json:"rule_set_version"`
	Rule           string    `json:"rule"`
}

// Message is the body of what is published and posted: the action and which of its events this is.
type Message struct {
	ID    string `json:"id"` // the decision id, or the decision id + ":end"
	Event string `json:"event"`
	Action
}

// check refuses an action that could not be delivered as stated; the error names the decision.
func (a *Action) check() error {
	var ps []string
	if a.DecisionID == "" {
		ps = append(ps, "decision_id is empty")
	}
	if strings.HasSuffix(a.DecisionID, ":end") {
		ps = append(ps, "decision_id must not end in \":end\" (reserved for the end of a promotion)")
	}
	switch a.Kind {
	case Promote:
		if a.End.IsZero() {
			ps = append(ps, "a promotion needs an end")
		} else if !a.End.After(a.Start) {
			ps = append(ps, fmt.Sprintf("end %s is not after start %s", a.End.Format(time.RFC3339), a.Start.Format(time.RFC3339)))
		}
		if math.IsNaN(a.Discount) || a.Discount < 0 || a.Discount > 100 {
			ps = append(ps, fmt.Sprintf("discount %v is not within 0..100", a.Discount))
		}
	case Hold:
	default:
		ps = append(ps, fmt.Sprintf("kind %q is neither %q nor %q", a.Kind, Promote, Hold))
	}
	if a.SKU == "" {
		ps = append(ps, "sku is empty")
	}
	if a.Start.IsZero() {
		ps = append(ps, "start is empty")
	}
	if len(ps) > 0 {
		return fmt.Errorf("action %q: %s", a.DecisionID, strings.Join(ps, "; "))
	}
	return nil
}

// ErrUnknownChannel is returned by Enqueue for a channel the act config does not list.
var ErrUnknownChannel = errors.New("channel not configured")

// token writes s as one KV key token, one-to-one: letters, digits, '-', '_' stay; every other byte
// becomes '=' and two hex digits (decision ids hold ':' and '.', which KV keys refuse or split on).
func token(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}
