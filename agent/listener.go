package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultHTTPRetry is how often a health listener that could not bind tries again.
const DefaultHTTPRetry = 30 * time.Second

// listener serves /healthz, /readyz, /status and /metrics. A port already taken (Telegraf, another
// exporter, a second agent) must not stop the agent: under Restart=always that is a crash loop that
// collects nothing. So a bind failure is logged at ERROR, counted, and retried in the background
// while the agent collects and forwards as usual.
type listener struct {
	a     *Agent
	log   *slog.Logger
	retry time.Duration

	up       prometheus.Gauge
	failures prometheus.Counter

	mu      sync.Mutex
	srv     *http.Server
	cancel  context.CancelFunc
	retryWG sync.WaitGroup // the retry loop
	serveWG sync.WaitGroup // the server once bound
}

func (a *Agent) newListener(log *slog.Logger) *listener {
	l := &listener{a: a, log: log, retry: a.opts.HTTPRetry}
	if l.retry <= 0 {
		l.retry = DefaultHTTPRetry
	}
	l.up = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gemba_http_listener_up", Help: "1 while the health and metrics listener is bound, 0 while it cannot bind (retrying).",
	})
	l.failures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gemba_http_bind_failures_total", Help: "Attempts to bind the health and metrics listener that failed.",
	})
	for _, c := range []prometheus.Collector{l.up, l.failures} {
		// A second Run of the same agent finds them registered; keep the first ones counting.
		if err := a.m.reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				if g, ok := are.ExistingCollector.(prometheus.Gauge); ok && c == l.up {
					l.up = g
				} else if k, ok := are.ExistingCollector.(prometheus.Counter); ok && c == l.failures {
					l.failures = k
				}
			} else {
				log.Error("listener metric not registered", "err", err)
			}
		}
	}
	return l
}

// start binds at once if it can, so the address is known before the agent reports ready; otherwise
// it keeps trying until stop.
func (l *listener) start() {
	if l.bind(true) {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.retryWG.Go(func() {
		t := time.NewTicker(l.retry)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if l.bind(false) {
					return
				}
			}
		}
	})
}

func (l *listener) bind(first bool) bool {
	addr := l.a.cfg.HTTP.Listen
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		l.failures.Inc()
		l.up.Set(0)
		if first {
			l.log.Error("HEALTH AND METRICS LISTENER CANNOT BIND: the agent keeps collecting and forwarding, but /healthz, /readyz and /metrics are off until it binds; free the port or set http.listen",
				"addr", addr, "err", err, "retry_every", l.retry)
		} else {
			l.log.Error("health and metrics listener still cannot bind", "addr", addr, "err", err, "retry_every", l.retry)
		}
		return false
	}
	srv := &http.Server{Handler: l.a.handler(), ReadHeaderTimeout: 5 * time.Second}
	l.mu.Lock()
	l.srv = srv
	l.mu.Unlock()
	l.a.mu.Lock()
	l.a.addr = ln.Addr().String()
	l.a.mu.Unlock()
	l.up.Set(1)
	l.serveWG.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			l.up.Set(0)
			l.log.Error("http listener failed", "err", err)
		}
	})
	if first {
		l.log.Info("health and metrics listening", "addr", ln.Addr().String())
	} else {
		l.log.Warn("health and metrics listener bound after earlier failures", "addr", ln.Addr().String())
	}
	return true
}

// stop ends the retries and shuts the server down. The retry loop ends first so that a bind in
// progress cannot start a server after the shutdown.
func (l *listener) stop() {
	if l.cancel != nil {
		l.cancel()
	}
	l.retryWG.Wait()
	l.mu.Lock()
	srv := l.srv
	l.mu.Unlock()
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}
	l.serveWG.Wait()
}
