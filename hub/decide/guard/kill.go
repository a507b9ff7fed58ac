package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// KillSwitch is the value of the kill key. While On, every Check and Approve suppresses. EndLive
// (only with On) also ends every promotion already running: each replica's delivery loop delivers
// its end at once (see act.Outbox.Run).
type KillSwitch struct {
	On      bool      `json:"on"`
	EndLive bool      `json:"end_live,omitempty"`
	By      string    `json:"by"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
}

// SetKill throws (on) or resets the kill switch for every replica sharing the bucket. Every
// decision reads it fresh from KV, before its guardrails and, when it reserved caps or a cooldown,
// again just before an allow is recorded, so it takes effect on every replica with the next
// decision (no watcher to lag or die). The last writer wins: an operator and a replica may both
// throw it.
func (g *Guard) SetKill(ctx context.Context, on bool, by, reason string) error {
	return g.SetKillSwitch(ctx, KillSwitch{On: on, By: by, Reason: reason})
}

// SetKillSwitch sets the kill switch to k (its At is the guard's clock), as SetKill does; with
// k.EndLive the delivery loops also end every promotion running.
func (g *Guard) SetKillSwitch(ctx context.Context, k KillSwitch) error {
	on, by, reason := k.On, k.By, k.Reason
	if by == "" {
		return errors.New("guard: kill switch: who throws it is required")
	}
	if k.EndLive && !on {
		return errors.New("guard: kill switch: end_live applies only when it is thrown (on)")
	}
	k.At = g.cfg.now().UTC()
	b, err := json.Marshal(k)
	if err != nil {
		return err
	}
	r := g.retrier(ctx)
	for {
		opCtx, cancel := context.WithTimeout(ctx, g.cfg.OpTimeout)
		_, err := g.kv.Put(opCtx, keyKill, b)
		cancel()
		if err == nil {
			g.log.Warn("kill switch set", "on", on, "end_live", k.EndLive, "by", by, "reason", reason)
			return nil
		}
		if err := r.Failed(err); err != nil {
			return fmt.Errorf("guard: kill switch: %w", err)
		}
	}
}

// Kill reads the kill switch (off when it was never set).
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
	return k, nil
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
