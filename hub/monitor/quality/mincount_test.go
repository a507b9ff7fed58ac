package quality

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
)

// min_count counts the values a window saw, as documented ("fewer values than this in either
// window: drift and bad share are not judged"), not the reservoir kept of them: a sensor read every
// 5 s (720 values an hour) with min_count 200 and the default 128-value reservoir still has its
// drift judged, and raised.
func TestMinCountAboveReservoirStillJudgesDrift(t *testing.T) {
	js := jetStream(t)
	s := &sink{}
	cfg := testConfig()
	cfg.Features = map[string]Thresholds{"temp": {MinCount: 200}}
	m := open(t, js, cfg, s, nil)
	obs := m.Observer()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	shift := t0.Add(4 * time.Hour)
	a := &agent{id: "a1", inc: "i1"}
	r := rand.New(rand.NewPCG(1, 2))
	var n uint64
	for i := range 6 * 720 { // every 5 s for 6 hours
		end := t0.Add(time.Duration(i) * 5 * time.Second)
		mu := 10.0
		if !end.Before(shift) {
			mu = 13
		}
		obs.Observe(a.batch(mean("line1.oven.temp", end, mu+r.NormFloat64())))
		n++
		if i%500 == 499 {
			flush(t, obs)
		}
	}
	flush(t, obs)
	waitFolded(t, m, n)
	testutil.WaitFor(t, 5*time.Second, "the drift event", func() bool { return len(s.of(KindDrift, StateBreach, "line1.oven.temp")) > 0 })
}
