package features

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// The property test of issue 19: random streams of every kind (gauges, a counter grouped by SKU,
// a machine state) with Bad samples, out-of-order samples within the lateness, late samples
// beyond it, SKU changes, counter resets, gaps, and clean restarts, compared window by window with
// a straightforward reference that recomputes each window from the list of folded samples. The
// clean restarts take no wall-clock time: downtime is wall-clock time, so they are invisible and the
// reference knows nothing of them (an event-time gap across one is the source's silence, watched).

const refCfg = `
features:
  - {signal: "*.temp", window: 6s, hop: 2s, allowed_lateness: 2s, idle_timeout: -1s, compute: [count, sum, mean, min, max, stddev, first, last, delta, rate, ewma, twa, p50, p95], ewma_alpha: 0.3}
  - {signal: parts, kind: counter, window: 5s, allowed_lateness: 2s, idle_timeout: -1s, compute: [delta, rate, resets], by: sku}
  - {signal: st, kind: state, window: 5s, allowed_lateness: 2s, idle_timeout: -1s, compute: [time_in_state, transitions, availability], states: {running: [run], planned: [run, idle]}}
`

// refStream generates the samples in arrival order.
func refStream(rng *rand.Rand) []signal.Sample {
	var ss []signal.Sample
	q := func() signal.Quality {
		if rng.IntN(15) == 0 {
			return signal.Bad
		}
		return signal.Good
	}
	end := t0.Add(3 * time.Minute)
	gstep := func() time.Duration {
		if rng.IntN(150) == 0 {
			return time.Duration(3+rng.IntN(20)) * time.Second // a gap: empty panes and windows
		}
		return time.Duration(50+rng.IntN(550)) * time.Millisecond
	}
	for _, sig := range []string{"a.temp", "b.temp"} {
		for at := t0.Add(time.Duration(rng.IntN(500)) * time.Millisecond); at.Before(end); at = at.Add(gstep()) {
			ss = append(ss, signal.Sample{Signal: sig, Time: at, Value: signal.Float(math.Round(100*(20+10*rng.Float64())) / 100), Quality: q()})
		}
	}
	// counter and state on a 500 ms grid, so samples fall exactly on window starts, with gaps
	c, sku := int64(100), "A"
	ss = append(ss, signal.Sample{Signal: "sku", Time: t0, Value: signal.String(sku)})
	step := func() time.Duration {
		if rng.IntN(25) == 0 {
			return time.Duration(10+rng.IntN(30)) * time.Second
		}
		return time.Duration(1+rng.IntN(8)) * 500 * time.Millisecond
	}
	for at := t0.Add(time.Second); at.Before(end); at = at.Add(step()) {
		if rng.IntN(12) == 0 {
			sku = string(rune('A' + rng.IntN(3)))
			ss = append(ss, signal.Sample{Signal: "sku", Time: at.Add(-time.Duration(rng.IntN(2)) * 500 * time.Millisecond), Value: signal.String(sku)})
		}
		if rng.IntN(30) == 0 {
			c = int64(rng.IntN(5))
		} else {
			c += int64(rng.IntN(6))
		}
		ss = append(ss, signal.Sample{Signal: "parts", Time: at, Value: signal.Int(c), Quality: q()})
	}
	states := []string{"run", "idle", "down"}
	for at := t0.Add(time.Duration(rng.IntN(4)) * 500 * time.Millisecond); at.Before(end); at = at.Add(step()) {
		ss = append(ss, signal.Sample{Signal: "st", Time: at, Value: signal.String(states[rng.IntN(3)]), Quality: q()})
	}
	sort.SliceStable(ss, func(i, j int) bool { return ss[i].Time.Before(ss[j].Time) })
	// out of order within the lateness: swap disjoint neighbours less than 1 s apart
	for i := 1; i < len(ss); i++ {
		if rng.IntN(4) == 0 && ss[i].Time.Sub(ss[i-1].Time) < time.Second {
			ss[i], ss[i-1] = ss[i-1], ss[i]
			i++
		}
	}
	// late: now and then a sample of a folded signal dated 15 s before the newest one
	out := make([]signal.Sample, 0, len(ss)+len(ss)/40)
	for _, s := range ss {
		out = append(out, s)
		if s.Signal != "sku" && rng.IntN(40) == 0 {
			l := s
			l.Time = s.Time.Add(-15 * time.Second)
			out = append(out, l)
		}
	}
	// flush: one sample per signal far enough ahead to close every window of the stream
	for _, sig := range []string{"a.temp", "b.temp", "parts", "st"} {
		v := signal.Float(0)
		switch sig {
		case "parts":
			v = signal.Int(c)
		case "st":
			v = signal.String("idle")
		}
		out = append(out, signal.Sample{Signal: sig, Time: end.Add(20 * time.Second), Value: v})
	}
	return out
}

// refPoint is a folded sample as the reference sees it.
type refPoint struct {
	t   int64
	v   float64
	s   string
	bad bool
	seq int // arrival order
	// for ewma/twa: whether the sample was in order (not older than the newest in-order one)
	inOrder bool
}

type refSeries struct {
	r                   *rule
	pts                 []refPoint
	wm, closed, obsFrom int64
	started, resetObs   bool
	kFirst              int64
	holdT               int64
	holdOK              bool
	obsAt               map[int64]int64 // obsFrom when window k closed
	resetAt             map[int64]bool  // no usable sample yet when window k closed
}

// reference replays arrival order to find what the engine folds (lateness and watermarks are
// defined on arrival), then computes every window from the folded samples.
func reference(t *testing.T, cfg Config, ss []signal.Sample) []signal.Feature {
	rules := make([]*rule, len(cfg))
	for i := range cfg {
		rules[i] = compile(&cfg[i])
	}
	series := map[string]*refSeries{}
	var order []string
	type skuPt struct {
		t   int64
		v   string
		seq int
	}
	var skus []skuPt
	for seq, smp := range ss {
		tt := smp.Time.UnixNano()
		if smp.Signal == "sku" {
			skus = append(skus, skuPt{tt, smp.Value.Text(), seq})
			continue
		}
		s := series[smp.Signal]
		if s == nil {
			for _, r := range rules {
				if ok, _ := pathMatch(r.src.Signal, smp.Signal); ok {
					s = &refSeries{r: r, obsAt: map[int64]int64{}, resetAt: map[int64]bool{}}
					break
				}
			}
			series[smp.Signal] = s
			order = append(order, smp.Signal)
		}
		r := s.r
		p := floorDiv(tt, r.hop)
		if !s.started {
			s.started = true
			s.closed = min(p, floorDiv(tt-r.lateness, r.hop)) - 1
			s.kFirst = s.closed + 1
			s.obsFrom, s.resetObs = tt, true
		}
		if p <= s.closed {
			continue // late
		}
		bad := smp.Quality == signal.Bad
		s.wm = max(s.wm, tt)
		if s.resetObs && !bad {
			s.obsFrom, s.resetObs = max(s.obsFrom, tt), false
		}
		pt := refPoint{t: tt, bad: bad, seq: seq}
		if v, ok := smp.Value.Number(); ok {
			pt.v = v
		}
		pt.s = smp.Value.Text()
		pt.inOrder = !s.holdOK || tt >= s.holdT
		if pt.inOrder {
			if !bad {
				s.holdT, s.holdOK = tt, true
			} else if s.holdOK && tt > s.holdT {
				s.holdT = tt
			}
		}
		s.pts = append(s.pts, pt)
		for k := s.closed + 1; k <= floorDiv(s.wm-r.lateness, r.hop)-1; k++ {
			s.obsAt[k], s.resetAt[k] = s.obsFrom, s.resetObs
			s.closed = k
		}
	}
	skuAt := func(ts int64) string {
		best, key := -1, unknownGroup
		for i, k := range skus {
			if k.t <= ts && (best < 0 || k.t > skus[best].t || (k.t == skus[best].t && k.seq > skus[best].seq)) {
				best, key = i, k.v
			}
		}
		return key
	}
	var out []signal.Feature
	for _, sig := range order {
		s := series[sig]
		// points in event time, ties in arrival order (the engine inserts after equal times)
		pts := slices.Clone(s.pts)
		sort.SliceStable(pts, func(i, j int) bool { return pts[i].t < pts[j].t })
		for k := s.kFirst; k <= s.closed; k++ {
			start := (k+1)*s.r.hop - s.r.window
			end := (k + 1) * s.r.hop
			partial := start < s.obsAt[k] || s.resetAt[k]
			f := func(name string, v float64, n int64, lbl signal.Labels) {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return
				}
				out = append(out, signal.Feature{Signal: sig, Name: name, WindowStart: time.Unix(0, start).UTC(), WindowEnd: time.Unix(0, end).UTC(), Value: v, Count: n, Labels: lbl, Partial: partial})
			}
			switch s.r.kind {
			case kindGauge:
				refGauge(s, s.pts, start, end, f)
			case kindCounter:
				refCounter(s, pts, start, end, skuAt, f)
			case kindState:
				refState(s, pts, start, end, f)
			}
		}
	}
	return out
}

func pathMatch(pattern, name string) (bool, error) {
	if pattern == "*.temp" {
		return len(name) > 5 && name[len(name)-5:] == ".temp", nil
	}
	return pattern == name, nil
}

type emitFn func(name string, v float64, n int64, lbl signal.Labels)

// refGauge computes a gauge window; arrival holds the folded samples in arrival order.
func refGauge(s *refSeries, arrival []refPoint, start, end int64, f emitFn) {
	var good []refPoint
	bad := 0
	for _, p := range arrival {
		if p.t >= start && p.t < end {
			if p.bad {
				bad++
			} else {
				good = append(good, p)
			}
		}
	}
	if len(good) > 0 {
		n := float64(len(good))
		var sum, mn, mx float64 = 0, math.Inf(1), math.Inf(-1)
		first, last := good[0], good[0]
		vals := make([]float64, 0, len(good))
		for _, p := range good {
			sum += p.v
			mn, mx = min(mn, p.v), max(mx, p.v)
			if p.t < first.t {
				first = p
			}
			if p.t >= last.t {
				last = p
			}
			vals = append(vals, p.v)
		}
		mean := sum / n
		var ss float64
		for _, v := range vals {
			ss += (v - mean) * (v - mean)
		}
		// ewma: over in-order good samples in arrival order; the window reports the value after
		// its newest in-order good sample
		var ew float64
		ewOK, ewAt, ewWin, ewWinOK := false, int64(0), 0.0, false
		// twa: the good value held from each in-order sample to the next in-order one
		var twI float64
		var twD int64
		heldV, heldT, held := 0.0, int64(0), false
		for _, p := range arrival {
			if !p.inOrder {
				continue
			}
			if held && p.t > heldT {
				lo, hi := max(heldT, start), min(p.t, end)
				if hi > lo {
					twI += heldV * float64(hi-lo) / 1e9
					twD += hi - lo
				}
				heldT = p.t
			}
			if p.bad {
				continue
			}
			heldV, heldT, held = p.v, p.t, true
			if ewOK {
				ew = s.r.alpha*p.v + (1-s.r.alpha)*ew
			} else {
				ew, ewOK = p.v, true
			}
			if p.t >= start && p.t < end && (!ewWinOK || p.t >= ewAt) {
				ewWin, ewAt, ewWinOK = ew, p.t, true
			}
		}
		twa := mean
		if twD > 0 {
			twa = twI / (float64(twD) / 1e9)
		}
		slices.Sort(vals)
		q := func(q float64) float64 { return type7(q, len(vals), func(i int) float64 { return vals[i] }) }
		cnt := int64(len(good))
		for _, name := range s.r.src.Compute {
			switch name {
			case "count":
				f(name, n, cnt, nil)
			case "sum":
				f(name, sum, cnt, nil)
			case "mean":
				f(name, mean, cnt, nil)
			case "min":
				f(name, mn, cnt, nil)
			case "max":
				f(name, mx, cnt, nil)
			case "stddev":
				f(name, math.Sqrt(ss/n), cnt, nil)
			case "first":
				f(name, first.v, cnt, nil)
			case "last":
				f(name, last.v, cnt, nil)
			case "delta":
				f(name, last.v-first.v, cnt, nil)
			case "rate":
				if last.t != first.t {
					f(name, (last.v-first.v)/(float64(last.t-first.t)/1e9), cnt, nil)
				}
			case "ewma":
				if ewWinOK {
					f(name, ewWin, cnt, nil)
				}
			case "twa":
				f(name, twa, cnt, nil)
			case "p50":
				f(name, q(0.5), cnt, nil)
			case "p95":
				f(name, q(0.95), cnt, nil)
			}
		}
	}
	if bad > 0 {
		f("bad_count", float64(bad), int64(bad), nil)
	}
}

func refCounter(s *refSeries, pts []refPoint, start, end int64, skuAt func(int64) string, f emitFn) {
	type grp struct {
		key       string
		delta     float64
		n, resets int64
	}
	var groups []*grp
	get := func(key string) *grp {
		for _, g := range groups {
			if g.key == key {
				return g
			}
		}
		g := &grp{key: key}
		groups = append(groups, g)
		return g
	}
	var before, in []refPoint
	for _, p := range pts {
		if p.t < start {
			before = append(before, p)
		} else if p.t < end {
			in = append(in, p)
		}
	}
	if len(in) == 0 {
		if len(before) == 0 || before[len(before)-1].bad {
			return // value unknown: no record
		}
		get(skuAt(end - 1))
	}
	havePrev, prev := false, 0.0
	for i := len(before) - 1; i >= 0; i-- {
		if !before[i].bad {
			havePrev, prev = true, before[i].v
			break
		}
	}
	bad := 0
	for _, p := range in {
		if p.bad {
			bad++
			continue
		}
		g := get(skuAt(p.t))
		g.n++
		if havePrev {
			inc, reset := increment(prev, p.v, 0)
			g.delta += inc
			if reset {
				g.resets++
			}
		}
		havePrev, prev = true, p.v
	}
	secs := float64(s.r.window) / 1e9
	for _, g := range groups {
		lbl := signal.Labels{{Key: "sku", Value: g.key}}
		f("delta", g.delta, g.n, lbl)
		f("rate", g.delta/secs, g.n, lbl)
		f("resets", float64(g.resets), g.n, lbl)
	}
	if bad > 0 {
		f("bad_count", float64(bad), int64(bad), nil)
	}
}

func refState(s *refSeries, pts []refPoint, start, end int64, f emitFn) {
	var carry *refPoint
	var in []refPoint
	for i := range pts {
		if pts[i].t < start {
			carry = &pts[i]
		} else if pts[i].t < end {
			in = append(in, pts[i])
		}
	}
	known := carry != nil && !carry.bad
	if !known && len(in) == 0 {
		return
	}
	times := map[string]int64{}
	var names []string
	add := func(st string, d int64) {
		if d <= 0 {
			return
		}
		if _, ok := times[st]; !ok {
			names = append(names, st)
		}
		times[st] += d
	}
	cur, curT := "", start
	if known {
		cur = carry.s
	}
	var transitions, good, bad int64
	haveLast, last := known, cur
	for _, p := range in {
		if known {
			add(cur, p.t-curT)
		}
		if p.bad {
			bad++
			known = false
			continue
		}
		good++
		if haveLast && p.s != last {
			transitions++
		}
		haveLast, last = true, p.s
		known, cur, curT = true, p.s, p.t
	}
	if known {
		add(cur, end-curT)
	}
	var run, planned int64
	for _, st := range names {
		f("time_in_state", float64(times[st])/1e9, good, signal.Labels{{Key: "state", Value: st}})
		if st == "run" || st == "idle" {
			planned += times[st]
			if st == "run" {
				run += times[st]
			}
		}
	}
	f("transitions", float64(transitions), good, nil)
	if planned > 0 {
		f("availability", float64(run)/float64(planned), good, nil)
	}
	if bad > 0 {
		f("bad_count", float64(bad), bad, nil)
	}
}

// TestPropertyEveryKindMatchesReference: for random streams the engine emits exactly the
// reference's records (same windows, labels, n and partial; values within 1e-9), with and without
// clean restarts between batches.
func TestPropertyEveryKindMatchesReference(t *testing.T) {
	cfg := parseConfig(t, refCfg)
	for seed := range uint64(12) {
		rng := rand.New(rand.NewPCG(seed, 19))
		ss := refStream(rng)
		restarts := map[int]bool{}
		var late, bad int64
		h := newHarness(t, cfg)
		in := slices.Clone(ss)
		for i := 0; i < len(in); {
			n := min(len(in)-i, 1+rng.IntN(25))
			h.add(slices.Clone(in[i : i+n])...)
			i += n
			if seed%3 != 0 && i < len(in) && rng.IntN(10) == 0 {
				st := h.e.Stats()
				late, bad = late+st.Late, bad+st.Bad
				h.restart(true)
				restarts[i] = true
			}
		}
		got := h.features()
		want := reference(t, cfg, ss)
		if len(want) < 500 {
			t.Fatalf("seed %d: only %d reference records", seed, len(want))
		}
		sortFeatures(got)
		sortFeatures(want)
		diffFeatures(t, fmt.Sprintf("seed %d (%d restarts)", seed, len(restarts)), got, want)
		if st := h.e.Stats(); late+st.Late == 0 || bad+st.Bad == 0 {
			t.Fatalf("seed %d: stream without late (%d) or Bad (%d) samples", seed, late+st.Late, bad+st.Bad)
		}
		_ = h.e.Close()
	}
}

// diffFeatures reports the first differences between two sorted record lists.
func diffFeatures(t *testing.T, what string, got, want []signal.Feature) {
	t.Helper()
	gm := map[string]signal.Feature{}
	for _, f := range got {
		gm[featureKey(f)] = f
	}
	wm := map[string]signal.Feature{}
	for _, f := range want {
		wm[featureKey(f)] = f
	}
	errs := 0
	report := func(format string, args ...any) {
		if errs++; errs <= 15 {
			t.Errorf(what+": "+format, args...)
		}
	}
	for _, w := range want {
		k := featureKey(w)
		g, ok := gm[k]
		if !ok {
			report("missing %s v=%v n=%d partial=%v", k, w.Value, w.Count, w.Partial)
			continue
		}
		if math.Abs(g.Value-w.Value) > 1e-9*max(1, math.Abs(w.Value)) || g.Count != w.Count || g.Partial != w.Partial {
			report("%s: got v=%v n=%d partial=%v, want v=%v n=%d partial=%v", k, g.Value, g.Count, g.Partial, w.Value, w.Count, w.Partial)
		}
	}
	for _, g := range got {
		if _, ok := wm[featureKey(g)]; !ok {
			report("extra %s v=%v n=%d partial=%v", featureKey(g), g.Value, g.Count, g.Partial)
		}
	}
	if len(got) != len(want) {
		report("%d records, want %d", len(got), len(want))
	}
	if errs > 15 {
		t.Errorf("%s: %d differences in all", what, errs)
	}
}

// TestPropertyCrashMatchesReference: a crash (no clean checkpoint) after a periodic checkpoint.
// Every record that is not partial equals the reference's (ewma: n only, its history lost samples),
// a window emitted twice is partial the second time, and only windows overlapping the stretch
// between the checkpoint and the first sample after the restart may be missing.
func TestPropertyCrashMatchesReference(t *testing.T) {
	cfg := parseConfig(t, refCfg)
	for seed := range uint64(8) {
		rng := rand.New(rand.NewPCG(seed, 23))
		ss := refStream(rng)
		want := reference(t, cfg, ss)
		wantBy := map[string]signal.Feature{}
		for _, f := range want {
			wantBy[featureKey(f)] = f
		}
		h := newHarness(t, cfg)
		ckAt := len(ss)/4 + rng.IntN(len(ss)/2)
		crashAt := ckAt + 1 + rng.IntN(200)
		ckWM, firstNew := map[string]time.Time{}, map[string]time.Time{}
		for i, smp := range ss {
			// samples arrive in real time: the wall clock follows the newest event time (the
			// restarted engine tells the stretch it missed from it)
			if smp.Time.After(h.clock.Now()) {
				h.clock.Set(smp.Time)
			}
			if i == ckAt {
				if err := h.e.Checkpoint(); err != nil {
					t.Fatal(err)
				}
			}
			if i == crashAt {
				h.restart(false)
				// the collectors start again too: an OPC UA subscription first sends every
				// node's current value, the SKU's with the time it was set
				for j := i - 1; j >= 0; j-- {
					if ss[j].Signal == "sku" {
						h.add(ss[j])
						break
					}
				}
			}
			if i < ckAt && smp.Time.After(ckWM[smp.Signal]) {
				ckWM[smp.Signal] = smp.Time
			}
			// the first sample after the restart, or one within the lateness before it (late
			// samples, 15 s old, are not folded and do not count)
			if f, ok := firstNew[smp.Signal]; i >= crashAt && (!ok || smp.Time.Before(f) && smp.Time.After(f.Add(-3*time.Second))) {
				firstNew[smp.Signal] = smp.Time
			}
			h.add(smp)
		}
		seen := map[string]int{}
		for _, f := range h.features() {
			k := featureKey(f)
			seen[k]++
			w, ok := wantBy[k]
			switch {
			case seen[k] == 2 && !f.Partial:
				t.Errorf("seed %d: %s emitted twice, the second not partial", seed, k)
			case seen[k] > 2:
				t.Errorf("seed %d: %s emitted %d times", seed, k, seen[k])
			case f.Partial:
			case !ok:
				t.Errorf("seed %d: %s (not partial) is not in the reference", seed, k)
			case f.Count != w.Count || (f.Name != "ewma" && math.Abs(f.Value-w.Value) > 1e-9*max(1, math.Abs(w.Value))):
				t.Errorf("seed %d: %s = %v n=%d, not partial, want %v n=%d", seed, k, f.Value, f.Count, w.Value, w.Count)
			}
		}
		for k, w := range wantBy {
			// the by signal's windows are those of parts
			sig := w.Signal
			if seen[k] == 0 && (w.WindowEnd.Before(ckWM[sig]) || !w.WindowStart.Before(firstNew[sig])) {
				t.Errorf("seed %d: window %s lost", seed, k)
			}
		}
		_ = h.e.Close()
	}
}
