package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MonitorEvent is a data-quality breach or recovery (drift, bad share, staleness, a sequence gap)
// on the decision log, so that the why of a decision held back by it can cite it. It is not a
// decision: no rules change fences it (a quality event is true whatever the rules).
type MonitorEvent struct {
	// ID is the event's identity, the same on every replica that raises it: stored once.
	ID          string    `json:"id"`
	Kind        string    `json:"kind"`  // drift, bad_share, stale, stuck, gap
	State       string    `json:"state"` // breach, recovered
	Feature     string    `json:"feature,omitempty"`
	Key         string    `json:"key,omitempty"`
	Agent       string    `json:"agent,omitempty"`
	Stream      string    `json:"stream,omitempty"`
	Incarnation string    `json:"incarnation,omitempty"`
	From        uint64    `json:"from,omitempty"`
	To          uint64    `json:"to,omitempty"`
	Time        time.Time `json:"time"`
	PSI         float64   `json:"psi,omitempty"`
	KS          float64   `json:"ks,omitempty"`
	KSP         float64   `json:"ks_p,omitempty"`
	BadShare    float64   `json:"bad_share,omitempty"`
	Current     int       `json:"current,omitempty"`
	Reference   int       `json:"reference,omitempty"`
	Why         string    `json:"why"`
	Replica     string    `json:"replica,omitempty"`

	Seq uint64 `json:"seq,omitempty"` // filled on read
}

var monitorKinds = map[string]bool{"drift": true, "bad_share": true, "stale": true, "stuck": true, "gap": true}

func (e *MonitorEvent) check() error {
	switch {
	case e.ID == "" || len(e.ID) > 1024:
		return fmt.Errorf("monitor event: id required (at most 1024 bytes), got %d bytes", len(e.ID))
	case !monitorKinds[e.Kind]:
		return fmt.Errorf("monitor event %s: unknown kind %q (drift, bad_share, stale, stuck, gap)", e.ID, e.Kind)
	case e.State != "breach" && e.State != "recovered":
		return fmt.Errorf("monitor event %s: unknown state %q (breach, recovered)", e.ID, e.State)
	case e.Kind == "gap" && e.Agent == "":
		return fmt.Errorf("monitor event %s: a gap names its agent", e.ID)
	case e.Kind != "gap" && (e.Feature == "" || e.Key == ""):
		return fmt.Errorf("monitor event %s: a %s event names its feature and key", e.ID, e.Kind)
	case e.Time.IsZero():
		return fmt.Errorf("monitor event %s: time required", e.ID)
	}
	return nil
}

// MonitorSubject is the subject of monitor events (three tokens, inside the stream's subjects).
func (c Config) MonitorSubject() string { return c.Prefix + ".decisions.monitor" }

// RecordMonitor stores a monitor event, once per ID within the duplicate window, with the
// decision records' TTL. Returns its sequence.
func (l *Log) RecordMonitor(ctx context.Context, e MonitorEvent) (uint64, error) {
	if err := e.check(); err != nil {
		return 0, err
	}
	e.Seq = 0
	data, err := json.Marshal(e)
	if err != nil {
		return 0, fmt.Errorf("monitor event %s: %w", e.ID, err)
	}
	m := &nats.Msg{Subject: l.cfg.MonitorSubject(), Data: data}
	ack, err := l.publishCAS(ctx, func() (*jetstream.PubAck, error) {
		return l.js.PublishMsg(ctx, m, jetstream.WithMsgID(e.ID), jetstream.WithMsgTTL(l.cfg.Retention))
	})
	switch {
	case err != nil:
		return 0, fmt.Errorf("monitor event %s: %w", e.ID, err)
	case ack.Duplicate:
		l.Stats.Duplicates.Add(1)
	default:
		l.Stats.Published.Add(1)
	}
	return ack.Sequence, nil
}

// MonitorEvents returns the newest limit monitor events (of feature × key, or of an agent's
// gaps, when given), oldest first. Malformed ones are skipped (counted and logged).
func (l *Log) MonitorEvents(ctx context.Context, feature, key string, limit int) ([]MonitorEvent, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	var out []MonitorEvent
	err := l.scanSubject(ctx, l.cfg.MonitorSubject(), func(m *jetstream.RawStreamMsg) {
		var e MonitorEvent
		err := json.Unmarshal(m.Data, &e)
		if err == nil {
			err = e.check()
		}
		if err != nil {
			l.malformed(m.Subject, m.Sequence, err)
			return
		}
		if (feature != "" && e.Feature != feature && e.Agent != feature) || (key != "" && e.Key != key) {
			return
		}
		e.Seq = m.Sequence
		out = append(out, e)
		if len(out) > limit {
			out = out[1:]
		}
	})
	return out, err
}
