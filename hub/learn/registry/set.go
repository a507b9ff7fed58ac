// Package registry holds demand model set versions: immutable fitted sets in a JetStream object store,
// the active and shadow pointers in KV (changed by CAS, every change recorded), a refit lock, and Cover.
package registry

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"
	"time"

	"github.com/gemba-io/gemba/hub/learn/demand"
	"github.com/gemba-io/gemba/hub/learn/forecast"
)

// Set is one fitted model set: what it was fitted on, and per series the chosen method, its
// parameters, its backtest and its forecast. A stored Set never changes; its Version is the hash of
// its content.
type Set struct {
	Version string    `json:"version"`
	Created time.Time `json:"created"`
	By      string    `json:"by"`
	Why     string    `json:"why,omitempty"`
	// From and To are the data range: days [From, To) in Location; the forecast's first day is To.
	From      time.Time `json:"from"`
	To        time.Time `json:"to"`
	Days      int       `json:"days"`
	Location  string    `json:"location"`
	ByChannel bool      `json:"by_channel"`
	Horizon   int       `json:"horizon"`
	// Demand counts what the series were built from (sales, duplicates, returns...).
	Demand demand.Stats `json:"demand"`
	Series []Model      `json:"series"`
	// Failed are the series no method could be fitted to, with the reason.
	Failed []Failure `json:"failed,omitempty"`
}

// Model is one series' fitted model.
type Model struct {
	Key   demand.Key     `json:"key"`
	Model forecast.Model `json:"model"`
	// MASE and Bias are the chosen method's backtest scores, BaselineMASE the 28-day moving average's on
	// the same origins; all zero when the series was too short to backtest (Origins 0, Note says why).
	MASE         float64          `json:"mase"`
	Bias         float64          `json:"bias"`
	BaselineMASE float64          `json:"baseline_mase"`
	Origins      int              `json:"origins"`
	Note         string           `json:"note,omitempty"`
	Forecast     []forecast.Point `json:"forecast"`
}

// Failure is a series that could not be fitted.
type Failure struct {
	Key demand.Key `json:"key"`
	Err string     `json:"error"`
	// Fallback is what Cover counts for the series instead (nil when even that could not be
	// computed: Cover then marks its SKU × site incomplete).
	Fallback *Fallback `json:"fallback,omitempty"`
}

// FallbackMethod is the method Cover lists for a series whose fit failed.
const FallbackMethod forecast.Method = "moving_average"

// Fallback is the plain moving average of a series' last Days days (the inventory's moving average
// of daily sales, what days of cover used before forecasting), flat over the horizon.
type Fallback struct {
	Mean float64 `json:"mean"`
	Days int     `json:"days"`
}

// DefaultFallbackWindow is the days of FitOptions.FallbackWindow by default (the inventory's
// rate_window_days by default).
const DefaultFallbackWindow = 7

// movingAverage is the fallback of a failed series: nil when its last window days hold no usable
// value (not finite, or beyond what a series may hold).
func movingAverage(v []float64, window int) *Fallback {
	w := v[max(0, len(v)-window):]
	if len(w) == 0 {
		return nil
	}
	var sum float64
	for _, x := range w {
		sum += x
	}
	mean := sum / float64(len(w))
	if math.IsNaN(mean) || math.IsInf(mean, 0) || math.Abs(mean) > forecast.MaxValue {
		return nil
	}
	return &Fallback{Mean: mean, Days: len(w)}
}

// FitOptions shape a fit.
type FitOptions struct {
	// Horizon is the number of days forecast (default 28).
	Horizon int
	// Workers fit series in parallel (default GOMAXPROCS).
	Workers int
	// Forecast tunes the backtest (candidates, origins...).
	Forecast forecast.Options
	By, Why  string
	Now      func() time.Time
	// FallbackWindow is the days of the moving average a series whose fit fails is counted at
	// (default DefaultFallbackWindow; the hub passes inventory.rate_window_days).
	FallbackWindow int
}

// ErrNoSeries: nothing to fit (no sales in the range, or every series failed).
var ErrNoSeries = errors.New("no demand series to fit")

// Fit chooses and fits a model for every series of ds and forecasts Horizon days. A series that
// cannot be fitted (empty, too short) is listed in Failed with its key; a set with no model at all is
// an error.
func Fit(ctx context.Context, ds *demand.Set, opts FitOptions) (*Set, error) {
	if opts.Horizon <= 0 {
		opts.Horizon = 28
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.FallbackWindow <= 0 {
		opts.FallbackWindow = DefaultFallbackWindow
	}
	keys := ds.Keys()
	models := make([]Model, len(keys))
	errs := make([]error, len(keys))
	next := make(chan int)
	var wg sync.WaitGroup
	for range opts.Workers {
		wg.Go(func() {
			for i := range next {
				models[i], errs[i] = fitOne(ds.Series[keys[i]], opts)
			}
		})
	}
feed:
	for i := range keys {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fit: %w", err)
	}
	s := &Set{Created: opts.Now().UTC().Truncate(time.Millisecond), By: opts.By, Why: opts.Why, From: ds.From, To: ds.To,
		Days: ds.Days, Location: ds.From.Location().String(), ByChannel: ds.ByChannel(), Horizon: opts.Horizon, Demand: ds.Stats}
	for i, k := range keys {
		if errs[i] != nil {
			s.Failed = append(s.Failed, Failure{Key: k, Err: errs[i].Error(), Fallback: movingAverage(ds.Series[k].Values, opts.FallbackWindow)})
			continue
		}
		s.Series = append(s.Series, models[i])
	}
	if len(s.Series) == 0 {
		if len(s.Failed) > 0 {
			return nil, fmt.Errorf("fit %s to %s: %w: all %d series failed, the first (%s): %s", day(ds.From), day(ds.To), ErrNoSeries,
				len(s.Failed), s.Failed[0].Key, s.Failed[0].Err)
		}
		return nil, fmt.Errorf("fit %s to %s: %w (no sales in the range)", day(ds.From), day(ds.To), ErrNoSeries)
	}
	return s, nil
}

func day(t time.Time) string { return t.Format("2006-01-02") }

func fitOne(sr *demand.Series, opts FitOptions) (Model, error) {
	fo := opts.Forecast
	fo.Name = sr.Key.String()
	m, bt, err := forecast.Select(sr.Values, fo)
	if err != nil {
		return Model{}, err
	}
	out := Model{Key: sr.Key, Model: m, Origins: bt.Origins, Note: bt.Note, Forecast: m.Forecast(opts.Horizon)}
	if bt.Origins > 0 {
		for _, sc := range bt.Scores {
			if sc.Method == bt.Chosen {
				out.MASE, out.Bias = sc.MASE, sc.Bias
			}
		}
		out.BaselineMASE = bt.Baseline.MASE
	}
	if err := out.check(); err != nil {
		return Model{}, fmt.Errorf("series %q: %w", fo.Name, err)
	}
	return out, nil
}

// check refuses numbers JSON cannot carry or a forecast cannot hold.
func (m *Model) check() error {
	for name, v := range map[string]float64{"mase": m.MASE, "bias": m.Bias, "baseline_mase": m.BaselineMASE,
		"alpha": m.Model.Alpha, "level": m.Model.Level, "sigma2": m.Model.Sigma2, "mse": m.Model.MSE} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%s is %v", name, v)
		}
	}
	if len(m.Forecast) == 0 {
		return errors.New("no forecast")
	}
	for i, p := range m.Forecast {
		for _, v := range []float64{p.Mean, p.Lo80, p.Hi80, p.Lo95, p.Hi95} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("forecast step %d is %v", i+1, v)
			}
		}
	}
	return nil
}

// encode returns the set's stored form (gzip'd JSON) and sets its version: the first 16 hex digits
// of the SHA-256 of its JSON with the version left empty.
func (s *Set) encode() ([]byte, error) {
	s.Version = ""
	raw, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode model set: %w", err)
	}
	s.Version = versionOf(raw)
	raw, err = json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode model set %s: %w", s.Version, err)
	}
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestSpeed)
	if _, err := zw.Write(raw); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func versionOf(raw []byte) string {
	h := sha256.Sum256(raw)
	return hex.EncodeToString(h[:8])
}

// errCorrupt: what is stored under a version is not that version.
var errCorrupt = errors.New("corrupt model set")

// decode reads a stored set and checks it is the version it is stored as.
func decode(version string, data []byte) (*Set, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("model set %s: %w: not gzip: %w", version, errCorrupt, err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("model set %s: %w: %w", version, errCorrupt, err)
	}
	var s Set
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("model set %s: %w: the stored JSON does not decode: %w", version, errCorrupt, err)
	}
	if s.Version != version {
		return nil, fmt.Errorf("model set %s: %w: it says it is version %q", version, errCorrupt, s.Version)
	}
	s.Version = ""
	check, err := json.Marshal(&s)
	if err != nil {
		return nil, fmt.Errorf("model set %s: %w: %w", version, errCorrupt, err)
	}
	if got := versionOf(check); got != version {
		return nil, fmt.Errorf("model set %s: %w: its content hashes to %s", version, errCorrupt, got)
	}
	s.Version = version
	for _, f := range s.Failed {
		if fb := f.Fallback; fb != nil && (math.IsNaN(fb.Mean) || math.IsInf(fb.Mean, 0) || fb.Days <= 0) {
			return nil, fmt.Errorf("model set %s: %w: failed series %s: fallback %+v", version, errCorrupt, f.Key, *fb)
		}
	}
	for i := range s.Series {
		if err := s.Series[i].check(); err != nil {
			return nil, fmt.Errorf("model set %s: %w: series %s: %w", version, errCorrupt, s.Series[i].Key, err)
		}
	}
	return &s, nil
}

// Summary condenses a set for listings.
type Summary struct {
	Series, Failed, Backtested int
	// MeanMASE and MeanBaseline average the chosen models' and the moving average's MASE over the
	// backtested series.
	MeanMASE, MeanBaseline float64
	Methods                map[forecast.Method]int
}

// Summary condenses s.
func (s *Set) Summary() Summary {
	sum := Summary{Series: len(s.Series), Failed: len(s.Failed), Methods: map[forecast.Method]int{}}
	for _, m := range s.Series {
		sum.Methods[m.Model.Method]++
		if m.Origins > 0 {
			sum.Backtested++
			sum.MeanMASE += m.MASE
			sum.MeanBaseline += m.BaselineMASE
		}
	}
	if sum.Backtested > 0 {
		sum.MeanMASE /= float64(sum.Backtested)
		sum.MeanBaseline /= float64(sum.Backtested)
	}
	return sum
}
