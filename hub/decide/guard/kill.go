package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// KillSwitch is the value of the kill key. While On, every Check and Approve suppresses. EndLive
// (only with On) says this throw also ends every promotion already running; it leaves Mark, which
// the delivery loops act on (see act.Outbox.Run).
type KillSwitch struct {
	On      bool      `json:"on"`
	EndLive bool      `json:"end_live,omitempty"`
	By      string    `json:"by"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
	// Mark is the last throw with end_live. It is kept by every later change of the switch (a reset
	// included) and replaced only by the next throw with end_live: a loop that reads the switch
	// only after a quick reset still ends the promotions running when it was thrown. Set by the
	// guard (SetKillSwitch ignores the caller's).
	Mark *EndLiveMark `json:"end_live_mark,omitempty"`
}

// EndLiveMark records a throw of the kill switch with end_live: every promotion whose start went
// out by At is to be ended, once, whatever the switch says when a delivery loop reads it.
type EndLiveMark struct {
	Gen    uint64    `json:"gen"` // 1 for the first throw with end_live, one more for each next one
	By     string    `json:"by"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// String says who threw the switch with end_live, when and why.
func (m EndLiveMark) String() string {
	s := fmt.Sprintf("kill switch thrown by %s at %s with end_live", m.By, m.At.Format(time.RFC3339))
	if m.Reason != "" {
		s += ": " + m.Reason
	}
	return s
}

// SetKill throws (on) or resets the kill switch for every replica sharing the bucket. Every
// decision reads it fresh from KV, before its guardrails and, when it reserved caps or a cooldown,
// again just before an allow is recorded, so it takes effect on every replica with the next
// decision (no watcher to lag or die). The last writer wins: an operator and a replica may both
// throw it.
func (g *Guard) SetKill(ctx context.Context, on bool, by, reason string) error {
	return g.SetKillSwitch(ctx, KillSwitch{On: on, By: by, Reason: reason})
}

// SetKillSwitch sets the kill switch to k (its At is the guard's clock), as SetKill does. With
// k.EndLive it also leaves a new end-live mark (the delivery loops end every promotion running
// then); without, the last mark is kept, by compare-and-set, so that a reset does not take it
// away.
func (g *Guard) SetKillSwitch(ctx context.Context, k KillSwitch) error {
	on, by, reason := k.On, k.By, k.Reason
	if by == "" {
		return errors.New("guard: kill switch: who throws it is required")
	}
	if k.EndLive && !on {
		return errors.New("guard: kill switch: end_live applies only when it is thrown (on)")
	}
	k.At, k.Mark = g.cfg.now().UTC(), nil
	_, err := g.modify(ctx, keyKill, func(cur []byte) ([]byte, bool, error) {
		next := k
		var old KillSwitch
		if cur != nil && json.Unmarshal(cur, &old) == nil {
			old = withMark(old)
			if old.On == k.On && old.EndLive == k.EndLive && old.By == k.By && old.Reason == k.Reason && old.At.Equal(k.At) {
				return nil, false, nil // this call's own write, its reply lost
			}
			next.Mark = old.Mark
		} // a value nobody can decode has no mark to keep
		if k.EndLive {
			next.Mark = &EndLiveMark{Gen: 1, By: by, Reason: reason, At: k.At}
			if old.Mark != nil {
				next.Mark.Gen = old.Mark.Gen + 1
			}
		}
		b, err := json.Marshal(next)
		return b, true, err
	})
	if err != nil {
		return fmt.Errorf("guard: kill switch: %w", err)
	}
	g.log.Warn("kill switch set", "on", on, "end_live", k.EndLive, "by", by, "reason", reason)
	return nil
}

// withMark gives a switch thrown with end_live by an older hub (no mark) the mark it stands for.
func withMark(k KillSwitch) KillSwitch {
	if k.Mark == nil && k.On && k.EndLive {
		k.Mark = &EndLiveMark{By: k.By, Reason: k.Reason, At: k.At}
	}
	return k
}

// Kill reads the kill switch (off when it was never set), with its end-live mark.
func (g *Guard) Kill(ctx context.Context) (KillSwitch, error) {
	b, rev, err := g.get(ctx, keyKill)
	if err != nil || rev == 0 {
		return KillSwitch{}, err
	}
	var k KillSwitch
	if err := json.Unmarshal(b, &k); err != nil {
		// Fail safe: a switch nobody can read is thrown.
		return KillSwitch{On: true, By: "unknown", Reason: fmt.Sprintf("undecodable kill switch (revision %d): %v", rev, err)}, nil
	}
	return withMark(k), nil
}

// String says whether the switch is thrown and, when it is, by whom, when and why.
func (k KillSwitch) String() string {
	if !k.On {
		return "kill switch off"
	}
	s := fmt.Sprintf("kill switch thrown by %s at %s", k.By, k.At.Format(time.RFC3339))
	if k.Reason != "" {
		s += ": " + k.Reason
	}
	return s
}

func (g *Guard) killAssessment(ctx context.Context) (Assessment, error) {
	k, err := g.Kill(ctx)
	if err != nil {
		return Assessment{}, err
	}
	a := Assessment{Guardrail: GKillSwitch, Passed: !k.On, Limit: 0, Detail: k.String()}
	if k.On {
		a.Value = 1
	}
	return a, nil
}
