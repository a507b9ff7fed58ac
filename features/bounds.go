package features

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gemba-io/gemba/config"
)

// TimeBounds are the sample times the agent trusts (agent.timestamps). A source clock that is
// wrong (a PLC dated 5138, an RTC reset to 1970) would otherwise pass for a real reading and push
// a signal's watermark where no later correct sample can follow.
type TimeBounds struct {
	// MaxFutureSkew is how far ahead of the agent's clock a sample may be dated. With it set, the
	// feature engine also never lets a watermark pass the agent's clock, so a sample within the skew
	// delays its window's close but never makes the correct samples after it late. 0: no bound.
	MaxFutureSkew time.Duration `yaml:"max_future_skew" json:"max_future_skew"`
	// MinTime is the earliest sample time accepted. Zero: no floor but 1677-09-21 (minNanoTime).
	MinTime Instant `yaml:"min_time" json:"min_time"`
}

// DefaultTimeBounds are the agent's defaults: 5 minutes of skew, nothing before 2000.
func DefaultTimeBounds() TimeBounds {
	return TimeBounds{MaxFutureSkew: 5 * time.Minute, MinTime: Instant{time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)}}
}

// Validate implements config.Validator.
func (b *TimeBounds) Validate(r config.Report) {
	if b.MaxFutureSkew <= 0 {
		r.Errorf("max_future_skew", "must be positive (a sample dated further ahead of the agent's clock is out of bounds), got %s", b.MaxFutureSkew)
	}
	if !b.MinTime.IsZero() && b.MinTime.After(time.Now()) {
		r.Errorf("min_time", "%s is in the future: every sample would be out of bounds", b.MinTime.Format(time.RFC3339))
	}
}

// Bound names which bound a sample time broke.
type Bound uint8

// Bounds a sample time can break.
const (
	InBounds Bound = iota
	TooNew         // more than MaxFutureSkew ahead of the agent's clock
	TooOld         // before MinTime
)

func (b Bound) String() string {
	switch b {
	case TooNew:
		return "future"
	case TooOld:
		return "past"
	}
	return "ok"
}

// Limits are TimeBounds resolved against one reading of the clock, for checking a batch.
type Limits struct {
	hi, lo time.Time // hi zero: no upper bound
}

// minNanoTime is the earliest time the engine can compute with (Unix nanoseconds): UnixNano wraps
// an earlier one (1601-01-01, the OPC UA epoch, reads as 2185), so it is out of bounds without a
// floor (min_time "") too. Later times are out of bounds by max_future_skew, which the agent
// requires.
var minNanoTime = time.Unix(0, math.MinInt64).UTC()

// At resolves the bounds at now.
func (b TimeBounds) At(now time.Time) Limits {
	l := Limits{lo: b.MinTime.Time}
	if l.lo.Before(minNanoTime) {
		l.lo = minNanoTime
	}
	if b.MaxFutureSkew > 0 {
		l.hi = now.Add(b.MaxFutureSkew)
	}
	return l
}

// Check says whether t is within the limits. time.Time comparisons, not UnixNano: a year-5138
// time does not fit in int64 nanoseconds.
func (l Limits) Check(t time.Time) Bound {
	switch {
	case !l.hi.IsZero() && t.After(l.hi):
		return TooNew
	case t.Before(l.lo):
		return TooOld
	}
	return InBounds
}

// Reason describes a broken bound for a sample's Reason.
func (b TimeBounds) Reason(t time.Time, why Bound) string {
	switch {
	case why == TooNew:
		return fmt.Sprintf("source time %s is more than %s ahead of the agent's clock (agent.timestamps.max_future_skew)", t.Format(time.RFC3339Nano), b.MaxFutureSkew)
	case b.MinTime.Before(minNanoTime):
		return fmt.Sprintf("source time %s is before %s, the earliest time the agent computes with (agent.timestamps.min_time sets no later floor)", t.Format(time.RFC3339Nano), minNanoTime.Format(time.RFC3339))
	}
	return fmt.Sprintf("source time %s is before %s (agent.timestamps.min_time)", t.Format(time.RFC3339Nano), b.MinTime.Format(time.RFC3339))
}

// Instant is a point in time in the config: RFC 3339 (2000-01-01T00:00:00Z) or a date (2000-01-01,
// midnight UTC).
type Instant struct{ time.Time }

// UnmarshalConfig implements config.Unmarshaler.
func (i *Instant) UnmarshalConfig(d *config.Decoder, n *yaml.Node, path string) {
	s, ok := d.Scalar(n, path)
	if !ok {
		return
	}
	if s == "" {
		*i = Instant{}
		return
	}
	for _, layout := range []string{time.RFC3339Nano, time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			*i = Instant{t.UTC()}
			return
		}
	}
	d.Errorf(n, path, "expected a time such as 2000-01-01T00:00:00Z or 2000-01-01, got %q", s)
}

// MarshalJSON renders the instant for the effective config ("" when unset).
func (i Instant) MarshalJSON() ([]byte, error) {
	if i.IsZero() {
		return json.Marshal("")
	}
	return json.Marshal(i.Format(time.RFC3339Nano))
}
