package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/signal"
)

// ReloadResult is what a reload did, for the log, the reload command and POST /admin/reload.
type ReloadResult struct {
	// Applied is false when the new config was invalid (or could not be read): the old one keeps
	// running untouched and Problems says why.
	Applied  bool     `json:"applied"`
	Problems []string `json:"problems,omitempty"`
	// ConfigVersion is the version in force afterwards (stamped on chunks from the switch on).
	ConfigVersion string `json:"config_version"`
	// Started lists collectors new in the file; Restarted those whose settings changed (stopped,
	// then started with the new settings) or that had failed; Stopped those removed or disabled.
	// Unchanged collectors keep running on their connection.
	Started   []string `json:"started,omitempty"`
	Restarted []string `json:"restarted,omitempty"`
	Stopped   []string `json:"stopped,omitempty"`
	Unchanged []string `json:"unchanged,omitempty"`
	// RestartRequired names the sections whose changes a reload does not apply (agent, http,
	// buffer, uplink, features): they take effect at the next restart.
	RestartRequired []string `json:"restart_required,omitempty"`
}

// ErrReloadUnsupported is returned when the agent was started without Options.Reload.
var ErrReloadUnsupported = errors.New("reload not supported: the agent was started without a config file to read again")

type reloadReq struct {
	done chan ReloadResult
}

// Reload reads the config again and applies it: see ReloadResult. It waits until the agent runs,
// and returns ctx's error if ctx ends first (the reload may still happen).
func (a *Agent) Reload(ctx context.Context) (ReloadResult, error) {
	if a.opts.Reload == nil {
		return ReloadResult{}, ErrReloadUnsupported
	}
	req := reloadReq{done: make(chan ReloadResult, 1)}
	select {
	case a.reloads <- req:
	case <-ctx.Done():
		return ReloadResult{}, ctx.Err()
	}
	select {
	case r := <-req.done:
		return r, nil
	case <-ctx.Done():
		return ReloadResult{}, ctx.Err()
	}
}

// build makes the supervisor of one collector, with a registry of its own for its series.
func (a *Agent) build(spec collectors.Spec) *supervisor {
	clog := a.log.With("collector", spec.Name)
	s := newSupervisor(spec, a.w, a.cfg.Agent.Restart, clog)
	c, err := collectors.Build(&spec, collectors.Deps{
		Logger:  clog,
		Metrics: s.registerer(),
		DataDir: filepath.Join(a.cfg.Agent.DataDir, spec.Name),
		Agent:   a.cfg.Agent.ID,
	})
	if err != nil {
		clog.Error("collector cannot be built; it stays down", "err", err)
		s.c = failed{err}
	} else {
		s.c = c
	}
	return s
}

// reload runs in Run's loop, so never two at once. Order matters: the collectors removed or
// changed stop first (their last Emits are answered, so their samples are in the buffer under
// the old version), then the version switches, then the new ones start. An unchanged collector
// is not touched at all: same supervisor, same connection, same series.
func (a *Agent) reload(parent context.Context) ReloadResult {
	log := a.log.With("component", "reload")
	old := a.config()
	next, err := a.opts.Reload()
	if err != nil {
		a.m.reloads.WithLabelValues("invalid").Inc()
		r := ReloadResult{ConfigVersion: old.Version(), Problems: config.Describe(a.opts.ConfigFile, err)}
		for _, p := range r.Problems {
			log.Error("config reload refused: the running config stays", "problem", p)
		}
		return r
	}
	r := ReloadResult{Applied: true, RestartRequired: restartRequired(old, next)}
	a.mu.Lock()
	a.pending = r.RestartRequired
	a.mu.Unlock()
	if len(r.RestartRequired) > 0 {
		a.m.restartRequired.Set(1)
		log.Warn("config changes not applied: restart required", "sections", strings.Join(r.RestartRequired, ","))
	} else {
		a.m.restartRequired.Set(0)
	}

	// The config in force: the sections a reload does not apply as they started, the new
	// collectors, and a version hashed over exactly that.
	live := *old
	live.Collectors = next.Collectors
	live.version = versionOf(&live)
	r.ConfigVersion = live.version

	cur := map[string]*supervisor{}
	for _, s := range a.supervisors() {
		cur[s.name] = s
	}
	var stop []*supervisor
	var start []collectors.Spec
	wanted := map[string]bool{}
	for _, spec := range next.Collectors {
		if spec.Disabled {
			continue
		}
		wanted[spec.Name] = true
		s, ok := cur[spec.Name]
		switch {
		case !ok:
			r.Started = append(r.Started, spec.Name)
			start = append(start, spec)
		case sameSpec(s.spec, spec) && s.status().State != signal.CollectorFailed:
			r.Unchanged = append(r.Unchanged, spec.Name)
		default:
			// Changed, or failed (a fixed certificate or password file is read again).
			r.Restarted = append(r.Restarted, spec.Name)
			stop = append(stop, s)
			start = append(start, spec)
		}
	}
	for _, s := range a.supervisors() {
		if !wanted[s.name] {
			r.Stopped = append(r.Stopped, s.name)
			stop = append(stop, s)
		}
	}

	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.Agent.ShutdownTimeout)
	for _, s := range stop {
		s.cancel()
	}
	for _, s := range stop {
		if !s.stop(sctx) {
			log.Error("collector did not stop within agent.shutdown_timeout; starting its successor anyway", "collector", s.name)
		}
		// Out-of-bounds counts live in the agent's registry, by collector: drop the gone one's.
		a.w.oob.DeletePartialMatch(prometheus.Labels{"collector": s.name})
	}
	cancel()

	a.w.setVersion(live.version)
	a.live.Store(&live)
	built := map[string]*supervisor{}
	for _, spec := range start {
		s := a.build(spec)
		built[spec.Name] = s
		s.start(parent)
	}
	var sups []*supervisor
	for _, spec := range next.Collectors {
		if spec.Disabled {
			continue
		}
		if s, ok := built[spec.Name]; ok {
			sups = append(sups, s)
		} else {
			sups = append(sups, cur[spec.Name])
		}
	}
	a.mu.Lock()
	a.sups = sups
	a.mu.Unlock()
	a.m.reloads.WithLabelValues("applied").Inc()
	log.Info("config reloaded", "config_version", live.version, "previous_version", old.Version(),
		"started", r.Started, "restarted", r.Restarted, "stopped", r.Stopped, "unchanged", r.Unchanged,
		"restart_required", r.RestartRequired)
	return r
}

// sameSpec reports whether a collector's settings are unchanged. It compares values, secrets
// included (a changed password restarts the collector; the effective config would show
// "[redacted]" for both).
func sameSpec(a, b collectors.Spec) bool {
	return a.Name == b.Name && a.Type == b.Type && a.Disabled == b.Disabled && reflect.DeepEqual(a.Settings, b.Settings)
}

// restartRequired lists the sections whose settings differ; a reload applies none of them.
// Features are among them: the engine's open windows were built for the old rules.
func restartRequired(old, next *Config) []string {
	var out []string
	for _, s := range []struct {
		name string
		a, b any
	}{
		{"agent", old.Agent, next.Agent},
		{"http", old.HTTP, next.HTTP},
		{"buffer", old.Buffer, next.Buffer},
		{"uplink", old.Uplink, next.Uplink},
		{"features", old.Features, next.Features},
	} {
		if !reflect.DeepEqual(s.a, s.b) {
			out = append(out, s.name)
		}
	}
	return slices.Clip(out)
}

// versionOf hashes the effective config as Parse does (secrets excluded).
func versionOf(c *Config) string {
	eff, err := json.Marshal(c)
	if err != nil {
		// Marshal of a config Parse rendered once cannot fail; keep a version that says so.
		return fmt.Sprintf("unrenderable-%d", time.Now().UnixNano())
	}
	sum := sha256.Sum256(config.RedactJSON(eff))
	return hex.EncodeToString(sum[:8])
}

// pendingRestart lists the sections the last applied reload could not apply.
func (a *Agent) pendingRestart() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pending
}
