package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// KillSwitch is the value of the kill key. While On, every Check and Approve suppresses.
type KillSwitch struct {
	On     bool      `json:"on"`
	By     string    `json:"by"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// SetKill throws (on) or resets the kill switch for every replica sharing the bucket. Every
// decision reads it fresh from KV, before its guardrails and, when it reserved caps or a cooldown,
// again just before an allow is recorded, so it takes effect on every replica with the next
// decision (no watcher to lag or die). The last writer wins: an operator and a replica may both
// throw it.
func (g *Guard) SetKill(ctx context.Context, on bool, by, reason string) error {
	if by == "" {
		return errors.New("guard: kill switch: who throws it is required")
	}
	b, err := json.Marshal(KillSwitch{On: on, By: by, Reason: reason, At: g.cfg.now().UTC()})
	if err != nil {
		return err
	}
	r := g.retrier(ctx)
	for {
		opCtx, cancel := context.WithTimeout(ctx, g.cfg.OpTimeout)
		_, err := g.kv.Put(opCtx, keyKill, b)
		cancel()
		if err == nil {
			g.log.Warn("kill switch set", "on", on, "by", by, "reason", reason)
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
