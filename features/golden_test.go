package features

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// TestGolden walks testdata/<case>/{config.yaml,input.jsonl,expected.jsonl} (and an optional
// stats.json). Input lines are samples in the wire format ({"sig","ts","f"|"i"|"s"|"b","q"}), one
// Add call each, or control lines:
//
//	{"op":"now","t":RFC3339}        set the wall clock
//	{"op":"tick"}                   run the idle check (Engine.Tick)
//	{"op":"checkpoint"}             write a periodic (not clean) checkpoint
//	{"op":"restart","mode":"clean"} Close and start a new engine on the same store
//	{"op":"restart","mode":"crash"} drop the engine without Close and start a new one
//	{"op":"restart",...,"down":"22s"} the same, the wall clock moving on by down in between
//	{"op":"batch","samples":[...]}  several samples in one Add call
//
// Expected lines are features in the wire format, compared as a set ordered by window, signal,
// name and labels; percentiles (pNN) within the sketch's 1% relative accuracy, others within 1e-9.
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/*/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 9 {
		t.Fatalf("found %d golden cases, want at least 9", len(dirs))
	}
	for _, c := range dirs {
		dir := filepath.Dir(c)
		t.Run(filepath.Base(dir), func(t *testing.T) { runGolden(t, dir) })
	}
}

type control struct {
	Op      string            `json:"op"`
	T       string            `json:"t"`
	Mode    string            `json:"mode"`
	Down    string            `json:"down"`
	Samples []json.RawMessage `json:"samples"`
}

func runGolden(t *testing.T, dir string) {
	yml, err := os.ReadFile(filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, parseConfig(t, string(yml)))
	defer func() { _ = h.e.Close() }()
	forEachLine(t, filepath.Join(dir, "input.jsonl"), func(n int, line []byte) {
		var c control
		if err := json.Unmarshal(line, &c); err != nil {
			t.Fatalf("input line %d: %v", n, err)
		}
		switch c.Op {
		case "":
			h.add(decodeSamples(t, n, line)...)
		case "batch":
			h.add(decodeSamples(t, n, bytes.Join(rawBytes(c.Samples), []byte(",")))...)
		case "now":
			ts, err := time.Parse(time.RFC3339Nano, c.T)
			if err != nil {
				t.Fatalf("input line %d: %v", n, err)
			}
			h.clock.Set(ts)
		case "tick":
			h.e.Tick()
		case "checkpoint":
			if err := h.e.Checkpoint(); err != nil {
				t.Fatalf("input line %d: %v", n, err)
			}
		case "restart":
			var down time.Duration
			if c.Down != "" {
				d, err := time.ParseDuration(c.Down)
				if err != nil {
					t.Fatalf("input line %d: %v", n, err)
				}
				down = d
			}
			h.restartAfter(c.Mode == "clean", down)
		default:
			t.Fatalf("input line %d: unknown op %q", n, c.Op)
		}
	})
	var want []signal.Feature
	forEachLine(t, filepath.Join(dir, "expected.jsonl"), func(n int, line []byte) {
		fs, err := signal.DecodeFeatures(append(append([]byte{'['}, line...), ']'))
		if err != nil {
			t.Fatalf("expected line %d: %v", n, err)
		}
		want = append(want, fs...)
	})
	got := h.features()
	sortFeatures(got)
	sortFeatures(want)
	compareFeatures(t, got, want)
	if data, err := os.ReadFile(filepath.Join(dir, "stats.json")); err == nil {
		var ws struct{ Late, Bad, Excluded, Forwarded *int64 }
		if err := json.Unmarshal(data, &ws); err != nil {
			t.Fatalf("stats.json: %v", err)
		}
		st := h.e.Stats()
		check := func(name string, want *int64, got int64) {
			if want != nil && *want != got {
				t.Errorf("%s = %d, want %d", name, got, *want)
			}
		}
		check("late", ws.Late, st.Late)
		check("bad", ws.Bad, st.Bad)
		check("excluded", ws.Excluded, st.Excluded)
		check("forwarded", ws.Forwarded, int64(h.fwd))
	}
}

func rawBytes(rs []json.RawMessage) [][]byte {
	out := make([][]byte, len(rs))
	for i, r := range rs {
		out[i] = r
	}
	return out
}

func decodeSamples(t *testing.T, n int, objs []byte) []signal.Sample {
	ss, err := signal.DecodeSamples(append(append([]byte{'['}, objs...), ']'))
	if err != nil {
		t.Fatalf("input line %d: %v", n, err)
	}
	return ss
}

func forEachLine(t *testing.T, file string, fn func(n int, line []byte)) {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		fn(n, line)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

func compareFeatures(t *testing.T, got, want []signal.Feature) {
	t.Helper()
	var gotKeys, wantKeys []string
	for _, f := range got {
		gotKeys = append(gotKeys, featureKey(f))
	}
	for _, f := range want {
		wantKeys = append(wantKeys, featureKey(f))
	}
	if strings.Join(gotKeys, "\n") != strings.Join(wantKeys, "\n") {
		t.Fatalf("feature records differ\n got:\n  %s\nwant:\n  %s", strings.Join(render(got), "\n  "), strings.Join(render(want), "\n  "))
	}
	for i := range got {
		g, w := got[i], want[i]
		tol := 1e-9 * max(1, math.Abs(w.Value))
		if isPercentile(w.Name) {
			tol = 0.01 * math.Abs(w.Value)
		}
		if math.Abs(g.Value-w.Value) > tol || g.Count != w.Count || g.Partial != w.Partial {
			t.Errorf("%s: got v=%v n=%d partial=%v, want v=%v n=%d partial=%v", gotKeys[i], g.Value, g.Count, g.Partial, w.Value, w.Count, w.Partial)
		}
	}
}

func render(fs []signal.Feature) []string {
	out := make([]string, len(fs))
	for i := range fs {
		out[i] = string(signal.AppendFeatureJSON(nil, &fs[i]))
	}
	return out
}

func isPercentile(name string) bool {
	return len(name) == 3 && name[0] == 'p' && name[1] >= '0' && name[1] <= '9'
}
