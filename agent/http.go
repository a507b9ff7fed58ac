package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one line of the readiness report.
type Check struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Degraded marks a check that passes but not fully (a collector with quarantined nodes).
	Degraded bool   `json:"degraded,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// Readiness states, the body's "status".
const (
	StatusReady    = "ready"
	StatusDegraded = "degraded"
	StatusNotReady = "not_ready"
)

// Readiness is the body of /readyz. Status is "ready" (200), "degraded" (200: every source
// reached, some only in part; the degraded checks say what) or "not_ready" (503).
type Readiness struct {
	Ready  bool    `json:"ready"`
	Status string  `json:"status"`
	Checks []Check `json:"checks"`
}

// Readiness reports whether the agent is doing its job: config loaded, buffer open and healthy,
// uplink connected with its stream in place, every collector reaching its source. Every failing
// or degraded check says why.
func (a *Agent) Readiness() Readiness {
	a.mu.Lock()
	running := a.running
	a.mu.Unlock()
	cc := Check{Name: "config", OK: true, Reason: "version " + a.config().Version()}
	if p := a.pendingRestart(); len(p) > 0 {
		cc.Reason += "; the file has changes a restart applies: " + strings.Join(p, ", ")
	}
	r := Readiness{Status: StatusNotReady, Checks: []Check{cc}}
	if !running {
		r.Checks = append(r.Checks, Check{Name: "agent", Reason: "starting or stopping"})
		return r
	}
	bs := a.buf.Stats()
	bc := Check{Name: "buffer", OK: bs.Err == nil && !bs.Full}
	var depth uint64
	for _, s := range bs.Streams {
		depth += s.Records
	}
	switch {
	case bs.Err != nil:
		bc.Reason = "buffer error: " + bs.Err.Error()
	case bs.Full:
		bc.Reason = fmt.Sprintf("buffer full (%d of %d bytes); policy %s applies", bs.DiskSize, bs.MaxBytes, a.cfg.Buffer.WhenFull)
	default:
		bc.Reason = fmt.Sprintf("%d records waiting, %d of %d bytes used", depth, bs.DiskSize, bs.MaxBytes)
	}
	r.Checks = append(r.Checks, bc)
	ok, why := a.up.Ready()
	uc := Check{Name: "uplink", OK: ok, Reason: why}
	if !ok {
		uc.Reason = fmt.Sprintf("%s; buffering locally (%d records waiting)", why, depth)
	}
	r.Checks = append(r.Checks, uc)
	for _, s := range a.supervisors() {
		h := s.health()
		r.Checks = append(r.Checks, Check{Name: "collector " + s.name, OK: h.Up, Degraded: h.Degraded, Reason: h.Reason})
	}
	r.Ready = true
	degraded := false
	for _, c := range r.Checks {
		r.Ready = r.Ready && c.OK
		degraded = degraded || c.Degraded
	}
	switch {
	case !r.Ready:
		r.Status = StatusNotReady
	case degraded:
		r.Status = StatusDegraded
	default:
		r.Status = StatusReady
	}
	return r
}

func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		r := a.Readiness()
		w.Header().Set("Content-Type", "application/json")
		if !r.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(a.Status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.Registry(), promhttp.HandlerOpts{Registry: a.m.reg}))
	mux.HandleFunc("POST /admin/reload", a.handleReload)
	if a.cfg.HTTP.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}
