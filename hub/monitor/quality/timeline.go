package quality

import "time"

// Span is one slice of a feature's values for one key: its start and width in event time, the mean
// of the values the monitor kept of it (its reservoir), and how many values it saw.
type Span struct {
	Start time.Time     `json:"start"`
	Width time.Duration `json:"width"`
	Mean  float64       `json:"mean"`
	N     int           `json:"n"`
}

// Timeline returns feature × key's slices still held (the reference window, the lag and the current
// window: a day and more by default), oldest first, each with the mean of its kept values; slices
// without a finite value are left out. False when the monitor has no value for it.
func (m *Monitor) Timeline(feature, key string) ([]Span, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	k := m.keys[feature][key]
	if k == nil {
		return nil, false
	}
	out := make([]Span, 0, len(k.ring))
	for _, s := range k.ring {
		if len(s.res) == 0 {
			continue
		}
		var sum float64
		for _, v := range s.res {
			sum += float64(v)
		}
		out = append(out, Span{Start: time.Unix(0, s.idx*k.width).UTC(), Width: time.Duration(k.width),
			Mean: sum / float64(len(s.res)), N: int(s.seen)})
	}
	return out, true
}
