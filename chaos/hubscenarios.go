package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// HubScenarios are the hub faults of the issue, in order.
func HubScenarios(o HubOptions) []HubScenario {
	return []HubScenario{
		{Name: "hub-kill", Replicas: 3, Act: func(ctx context.Context, e *HubEnv) error {
			for k := 0; ; k++ {
				if err := sleepCtx(ctx, o.KillEvery); err != nil {
					return nil // the load is over
				}
				h := e.hubs[k%len(e.hubs)]
				h.kill()
				if err := e.startHub(h); err != nil {
					return err
				}
				e.note("SIGKILL %s and restart it", h.name)
			}
		}},
		{Name: "nats-node-restart", Cluster: true, Replicas: 2, Act: func(ctx context.Context, e *HubEnv) error {
			if err := sleepCtx(ctx, o.Load/4); err != nil {
				return nil
			}
			// The node leading the guard's bucket: its loss forces an election where decisions are made.
			victim := e.nodes[1]
			if s, err := e.js.Stream(ctx, "KV_GEMBA_GUARD"); err == nil && s.CachedInfo().Cluster != nil {
				for _, n := range e.nodes {
					if n.opts.ServerName == s.CachedInfo().Cluster.Leader {
						victim = n
					}
				}
			}
			victim.stop()
			e.note("stopped NATS node %s (leader of the guard bucket) for %v", victim.opts.ServerName, o.NodeDown)
			_ = sleepCtx(ctx, o.NodeDown) // bring it back even when the load ended first
			if err := victim.start(); err != nil {
				return err
			}
			return victim.ready()
		}},
		{Name: "webhook-down", Replicas: 2, Act: func(ctx context.Context, e *HubEnv) error {
			if err := sleepCtx(ctx, o.Load/5); err != nil {
				return nil
			}
			e.hook.setDown(true)
			e.note("webhook endpoint answers 503 for %v", o.WebhookDown)
			_ = sleepCtx(ctx, o.WebhookDown)
			e.hook.setDown(false)
			return nil
		}},
		{Name: "replay-burst", Replicas: 2, Act: func(ctx context.Context, e *HubEnv) error {
			if err := sleepCtx(ctx, o.Load/3); err != nil {
				return nil
			}
			t0 := time.Now()
			if err := e.replayBurst(ctx); err != nil {
				return err
			}
			e.note("an agent back from an outage replayed %d crossings (historical) in %v", o.Burst, time.Since(t0).Round(time.Millisecond))
			return nil
		}},
		{Name: "rule-rollback", Replicas: 2, Act: func(ctx context.Context, e *HubEnv) error {
			if err := sleepCtx(ctx, o.Load/3); err != nil {
				return nil
			}
			if err := e.rules(ctx, "activate", "rules-v2.yaml", "--why", "chaos: a new discount mid-load"); err != nil {
				return err
			}
			if err := sleepCtx(ctx, o.Load/3); err != nil {
				return nil
			}
			return e.rules(ctx, "rollback", "--why", "chaos: roll back mid-load")
		}},
	}
}

// rules runs `gemba-hub rules <args> --by chaos -c hub-a.yaml`, as an operator would.
func (e *HubEnv) rules(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, e.o.HubBin, append(append([]string{"rules"}, args...), "--by", "chaos", "-c", e.hubs[0].cfgFile)...)
	cmd.Dir = e.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("gemba-hub rules %s: %v: %s", strings.Join(args, " "), err, out)
	}
	e.note("gemba-hub rules %s: %s", args[0], strings.TrimSpace(string(out)))
	return nil
}

// RunHub runs one hub scenario in a fresh environment and tears it down.
func RunHub(ctx context.Context, o HubOptions, sc HubScenario) (r HubResult) {
	start := time.Now()
	r.Scenario = sc.Name
	defer func() { r.Duration = time.Since(start) }()
	e, err := setupHub(ctx, o, sc)
	if e != nil {
		defer func() {
			e.teardown()
			if r.Pass() {
				_ = os.RemoveAll(e.dir) // keep the logs of failures only
			}
		}()
	}
	if err != nil {
		r.Err = fmt.Errorf("setup: %w", err)
		return r
	}
	actCtx, stopAct := context.WithCancel(ctx)
	actDone := make(chan error, 1)
	go func() { actDone <- sc.Act(actCtx, e) }()
	loadErr := e.load(ctx, o.Load)
	stopAct()
	actErr := <-actDone
	if loadErr != nil {
		r.Err = fmt.Errorf("load: %w", loadErr)
		return r
	}
	if actErr != nil {
		r.Err = fmt.Errorf("fault: %w", actErr)
		return r
	}
	// Every replica up again (a kill may have been the last thing done), then wait for the
	// decisions to settle: each crossing decided, each allowed decision recorded, published, posted.
	for _, h := range e.hubs {
		if h.cmd == nil || h.exited() {
			if err := e.startHub(h); err != nil {
				r.Err = err
				return r
			}
		}
	}
	var l *ledger
	settle := time.Now()
	deadline := settle.Add(o.Settle)
	logged := 0
	defer func() { e.logf("settled in %v", time.Since(settle).Round(100*time.Millisecond)) }()
	for {
		l, err = e.read(ctx)
		if err == nil && e.complete(l) {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				r.Err = fmt.Errorf("read the hub's stores: %w", err)
				return r
			}
			break // judge what is there: the breaches say what is missing
		}
		if l != nil && time.Since(settle) >= time.Duration(logged+1)*10*time.Second {
			logged++
			u, f := e.missing(l)
			e.logf("still settling after %v: %d crossings undecided, %d allowed decisions not yet recorded, published and posted", time.Since(settle).Round(time.Second), u, f)
		}
		_ = sleepCtx(ctx, 500*time.Millisecond)
	}
	e.judge(l, &r)
	e.mu.Lock()
	r.Notes = append(r.Notes, e.changes...)
	e.mu.Unlock()
	if len(r.Breaches) > 0 {
		for _, h := range e.hubs {
			e.logf("%s log: %s", h.name, tail(h.logFile))
		}
	}
	if sc.Name == "rule-rollback" && len(r.Versions) < 2 && r.Pass() {
		r.Breaches = append(r.Breaches, fmt.Sprintf("no decision fired under both versions (%v): the rollback was not under load", r.Versions))
	}
	if r.Decided == 0 && r.Pass() {
		r.Err = fmt.Errorf("no crossing decided: the load never ran")
	}
	return r
}

// RunAllHub runs every hub scenario (or those named in only) and writes one summary line each.
func RunAllHub(ctx context.Context, o HubOptions, only string) []HubResult {
	var out []HubResult
	for _, sc := range HubScenarios(o) {
		if only != "" && !strings.Contains(","+only+",", ","+sc.Name+",") {
			continue
		}
		r := RunHub(ctx, o, sc)
		fmt.Fprintln(o.Log, r.Line())
		out = append(out, r)
	}
	return out
}

// BuildHub builds gemba-hub into dir (without the race detector even under -race: the scenarios
// load real processes, and an instrumented hub would be a tenth as fast) and returns its path.
func BuildHub(dir string) (string, error) {
	bin := dir + "/gemba-hub"
	out, err := exec.Command("go", "build", "-o", bin, "github.com/gemba-io/gemba/cmd/gemba-hub").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build gemba-hub: %v\n%s", err, out)
	}
	return bin, nil
}
