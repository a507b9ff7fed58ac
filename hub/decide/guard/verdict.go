package guard

import "time"

// Outcome is where a decision stands.
type Outcome string

const (
	// Allow: act (deliver the action under the decision id). The caps and cooldown are consumed.
	Allow Outcome = "allow"
	// Suppress: do not act; Verdict.Guardrail says which guardrail stopped it and Reason why.
	Suppress Outcome = "suppress"
	// NeedsApproval: queued for a person; Approve turns it into Allow or Suppress, Reject into Rejected.
	NeedsApproval Outcome = "needs_approval"
	// Rejected by an approver; Expired: nobody decided within approval.ttl. Neither acts.
	Rejected Outcome = "rejected"
	Expired  Outcome = "expired"
	// Released: it was allowed, the action was not delivered, and what it consumed was given back.
	Released Outcome = "released"
)

// Guardrail names, as they appear in verdicts and the audit.
const (
	GKillSwitch         = "kill_switch"
	GInputs             = "inputs"
	GTimeSkew           = "time_skew"
	GMaxDiscount        = "max_discount"
	GMaxDiscountChannel = "max_discount_channel"
	GApproval           = "approval"
	GCooldown           = "cooldown"
	GDailyCount         = "daily_count"
	GDailyBudget        = "daily_budget"
	GDailyCountChannel  = "daily_count_channel"
	GDailyBudgetChannel = "daily_budget_channel"
)

// Assessment is one guardrail's verdict on one decision, for the audit: what was measured against
// what limit. For a cap, Value is what the day holds with this decision counted.
type Assessment struct {
	Guardrail string  `json:"guardrail"`
	Passed    bool    `json:"passed"`
	Value     float64 `json:"value"`
	Limit     float64 `json:"limit"`
	Detail    string  `json:"detail,omitempty"`
}

// Approval records who decided a queued decision.
type Approval struct {
	By       string    `json:"by"`
	Reason   string    `json:"reason,omitempty"`
	At       time.Time `json:"at"`
	Approved bool      `json:"approved"`
}

// Verdict is the guard's answer for one decision id. It is stored with the decision: every later
// Check of the same id returns it (Replayed set) rather than deciding again.
type Verdict struct {
	DecisionID string  `json:"decision_id"`
	Outcome    Outcome `json:"outcome"`
	// Guardrail and Reason name what stopped (Suppress) or queued (NeedsApproval) the decision.
	Guardrail string `json:"guardrail,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// Assessments lists every guardrail evaluated, in order, passed or failed.
	Assessments []Assessment `json:"assessments"`
	// ActionTime is the time the caps and cooldown were counted at: the proposal's time, or the
	// approval's for an approved decision.
	ActionTime time.Time `json:"action_time"`
	Decided    time.Time `json:"decided"`
	Replica    string    `json:"replica"`
	Approval   *Approval `json:"approval,omitempty"`
	// Round numbers the decisions of this id: 0 for the first; a decision taken again after a
	// suppression by the kill switch (which is not final once the switch is reset) is one more.
	// The decision log keeps one record per event and round.
	Round int `json:"round,omitempty"`
	// Replayed: this call found the verdict already recorded (another replica, an earlier call);
	// Judged is then the proposal that verdict was given to, which the caller acts on.
	Replayed bool      `json:"-"`
	Judged   *Proposal `json:"-"`
}

// Acts reports whether the decision may be acted on.
func (v Verdict) Acts() bool { return v.Outcome == Allow }

// Failed returns the first failed assessment, if any.
func (v Verdict) Failed() (Assessment, bool) {
	for _, a := range v.Assessments {
		if !a.Passed {
			return a, true
		}
	}
	return Assessment{}, false
}
