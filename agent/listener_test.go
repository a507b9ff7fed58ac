package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/buffer"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/uplink"
	dto "github.com/prometheus/client_model/go"
)

func TestDefaultListenIsNotTelegrafs(t *testing.T) {
	cfg, err := Parse([]byte("agent: {id: gw, site: s}\nbuffer: {dir: /tmp/x}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Listen != "127.0.0.1:7467" {
		t.Fatalf("default http.listen %q, want 127.0.0.1:7467 (9273 is Telegraf's prometheus_client)", cfg.HTTP.Listen)
	}
}

// A port already taken must not stop the agent: it collects and buffers, says so loudly, and binds
// once the port is free.
func TestBindFailureKeepsAgentRunningAndRetries(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := taken.Addr().String()
	s := &scripted{name: "c1/v"}
	register("bindfail", s)
	yml := strings.Replace(baseConfig, `http: {listen: "127.0.0.1:0"}`, fmt.Sprintf(`http: {listen: %q}`, addr), 1) + `
collectors:
  - name: c1
    type: scripted
    key: bindfail
`
	cfg, err := Parse([]byte(yml), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	var logs testutil.Buffer
	var mem *buffer.Memory
	ready := make(chan string, 1)
	a := New(cfg, Options{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		OpenBuffer: func(c buffer.Config, _ buffer.Options) (buffer.Buffer, error) {
			mem = buffer.NewMemory(c)
			return keepOpen{mem}, nil
		},
		NewUplink: func(uplink.Config, uplink.Identity, uplink.Source, uplink.Options) (Uplink, error) {
			return &fakeUplink{}, nil
		},
		Ready:     ready,
		HTTPRetry: 20 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("agent did not stop")
		}
	}()
	select {
	case got := <-ready:
		if got != "" {
			t.Fatalf("ready with address %q while the port is taken", got)
		}
	case err := <-done:
		t.Fatalf("agent exited on a taken port: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not start")
	}
	if !strings.Contains(logs.String(), "level=ERROR msg=\"HEALTH AND METRICS LISTENER CANNOT BIND") || !strings.Contains(logs.String(), addr) {
		t.Fatalf("no loud error naming %s in the log:\n%s", addr, logs.String())
	}
	if v := metricValue(t, a, "gemba_http_listener_up"); v != 0 {
		t.Fatalf("gemba_http_listener_up %v while the port is taken", v)
	}
	// Collection goes on without the listener.
	testutil.WaitFor(t, 10*time.Second, "samples collected without the listener", func() bool {
		v, _ := lookupMetric(t, a, "gemba_collector_samples_total")
		return v > 0
	})

	if err := taken.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "listener bound once the port is free", func() bool { return a.Addr() == addr })
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/healthz %d after binding", resp.StatusCode)
	}
	if v := metricValue(t, a, "gemba_http_listener_up"); v != 1 {
		t.Fatalf("gemba_http_listener_up %v after binding", v)
	}
	if v := metricValue(t, a, "gemba_http_bind_failures_total"); v < 1 {
		t.Fatalf("gemba_http_bind_failures_total %v", v)
	}
}

func metricValue(t *testing.T, a *Agent, name string) float64 {
	t.Helper()
	v, ok := lookupMetric(t, a, name)
	if !ok {
		t.Fatalf("metric %s not registered", name)
	}
	return v
}

// lookupMetric returns the value of the first series of a gauge or counter, if it exists yet.
func lookupMetric(t *testing.T, a *Agent, name string) (float64, bool) {
	t.Helper()
	mfs, err := a.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch mf.GetType() {
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}
