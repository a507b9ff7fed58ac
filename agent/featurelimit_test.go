package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/features"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// agent.max_feature_series reaches the feature engine: a signal beyond it gets no series, its
// samples are forwarded raw (not lost) and counted.
func TestMaxFeatureSeries(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second).Add(-5 * time.Second)
	var ss []signal.Sample
	for i, sig := range []string{"m.a", "m.b", "m.c"} {
		ss = append(ss, signal.Sample{Signal: sig, Time: now.Add(time.Duration(i) * time.Millisecond), Value: signal.Int(int64(i)), Source: "plc:x"})
	}
	done := registerSeq("feature-limit", ss)
	h := start(t, strings.Replace(baseConfig, "linger: 1ms", "linger: 1ms, max_feature_series: 2", 1)+`
collectors:
  - {name: plc, type: sequence, key: feature-limit}
features:
  - {signal: "m.*", window: 1m, compute: [count], forward_raw: false}
`)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("collector did not emit its samples")
	}
	testutil.WaitFor(t, 10*time.Second, "the refused sample counted", func() bool {
		return testutil.Metric(t, h.agent.Registry(), "gemba_features_samples_total", "result", "series_limit") == 1
	})
	if v := testutil.Metric(t, h.agent.Registry(), "gemba_features_series"); v != 2 {
		t.Errorf("gemba_features_series = %v, want 2", v)
	}
	testutil.WaitFor(t, 10*time.Second, "the refused signal's sample in the buffer", func() bool {
		got, _ := bufferedRecords(t, h.buf, signal.StreamSamples)
		return len(got) == 1 && got[0].Signal == "m.c"
	})
}

func TestMaxFeatureSeriesConfig(t *testing.T) {
	def, err := Parse([]byte("agent: {site: s1}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if def.Agent.MaxFeatureSeries != features.DefaultMaxSeries {
		t.Errorf("default max_feature_series = %d", def.Agent.MaxFeatureSeries)
	}
	_, err = Parse([]byte("agent:\n  site: s1\n  max_feature_series: 0\n"), noEnv)
	if err == nil || !strings.Contains(err.Error(), "line 3: agent.max_feature_series: must be at least 1") {
		t.Errorf("max_feature_series 0: %v", err)
	}
}
