// Package fleet keeps the latest heartbeat of every agent (buffer depth, drops, collectors,
// versions) in a KV bucket all hub replicas share, and tells which agents went quiet.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/state/kvkey"
	"github.com/gemba-io/gemba/hub/state/kvwatch"
	"github.com/gemba-io/gemba/internal/kvretry"
	"github.com/gemba-io/gemba/signal"
)

// Agent is what the hub knows about one agent. An agent clock far ahead of the hub's must not
// win over every later heartbeat until that time comes, nor one behind read as silence: LastSeen
// is bounded by the hub's clock and staleness is judged by Received.
type Agent struct {
	Agent         string                           `json:"agent"`
	Site          string                           `json:"site"`
	LastSeen      time.Time                        `json:"last_seen"` // the heartbeat's own time, at most stale_after past Received
	Received      time.Time                        `json:"received"`  // when the hub stored it (its clock): staleness is judged by it
	Version       string                           `json:"version"`
	Commit        string                           `json:"commit,omitempty"`
	ConfigVersion string                           `json:"config_version"`
	Incarnation   string                           `json:"incarnation,omitempty"`
	UptimeSeconds float64                          `json:"uptime_s"`
	Buffer        map[string]signal.BufferState    `json:"buffer,omitempty"`
	Collectors    map[string]signal.CollectorState `json:"collectors,omitempty"`
	revision      uint64
}

// View is an agent with its derived state for readers.
type View struct {
	Agent
	Stale bool `json:"stale"` // no heartbeat for longer than stale_after
	// AgeSeconds is how long ago the hub received the heartbeat (its clock, as Stale: an agent
	// clock ahead or behind does not show in it).
	AgeSeconds float64 `json:"age_s"`
	// BufferRecords and Dropped sum the agent's buffer streams.
	BufferRecords uint64  `json:"buffer_records"`
	Dropped       uint64  `json:"dropped"`
	OldestSeconds float64 `json:"buffer_oldest_age_s"`
}

// Fleet is the heartbeat table. Safe for concurrent use.
type Fleet struct {
	kv         jetstream.KeyValue
	staleAfter time.Duration
	log        *slog.Logger
	now        func() time.Time

	mu     sync.RWMutex
	agents map[string]*Agent // by KV key

	stop func() // ends the bucket watch
}

// Open creates or binds the bucket, loads it and starts watching it.
func Open(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, staleAfter time.Duration, log *slog.Logger) (*Fleet, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kv, err := kvretry.KeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: bucket, Replicas: max(replicas, 1), History: 1,
		Description: "gemba-hub: latest heartbeat of each agent",
	})
	if err != nil {
		return nil, fmt.Errorf("fleet bucket %s: %w", bucket, err)
	}
	f := &Fleet{kv: kv, staleAfter: staleAfter, log: log, now: time.Now, agents: map[string]*Agent{}}
	stop, err := kvwatch.Follow(ctx, js, kv, f.remote, kvwatch.Options{Log: log})
	if err != nil {
		return nil, fmt.Errorf("fleet bucket %s: %w", bucket, err)
	}
	f.stop = stop
	return f, nil
}

// Close stops watching.
func (f *Fleet) Close() {
	if f.stop != nil {
		f.stop()
		f.stop = nil
	}
}

func (f *Fleet) remote(e jetstream.KeyValueEntry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(f.agents, e.Key())
		return
	}
	var a Agent
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		f.log.Error("fleet entry unreadable, ignored", "key", e.Key(), "revision", e.Revision(), "err", err)
		return
	}
	a.revision = e.Revision()
	if cur := f.agents[e.Key()]; cur == nil || cur.revision < a.revision {
		f.agents[e.Key()] = &a
	}
}

// Heartbeat stores a status if it is newer than the one known (heartbeats of one agent can reach
// different replicas out of order), or if the hub received the one known half of stale_after ago.
func (f *Fleet) Heartbeat(ctx context.Context, h *signal.Header, st *signal.Status) error {
	key := kvkey.Join(h.Site, h.Agent)
	now := f.now().UTC()
	a := Agent{
		Agent: h.Agent, Site: h.Site, LastSeen: minTime(st.Time.UTC(), now.Add(f.staleAfter)), Received: now, Version: st.Version,
		Commit: st.Commit, ConfigVersion: st.ConfigVersion, Incarnation: h.Incarnation,
		UptimeSeconds: st.Uptime, Buffer: st.Buffer, Collectors: st.Collectors,
	}
	data, err := json.Marshal(&a)
	if err != nil {
		return fmt.Errorf("fleet: encode %s: %w", key, err)
	}
	for range 10 {
		f.mu.RLock()
		cur := f.agents[key]
		f.mu.RUnlock()
		// A stored heartbeat further ahead than LastSeen is now bounded (an older hub wrote it) loses,
		// and so does one the hub received half of stale_after ago or more: heartbeats reach replicas
		// out of order by seconds, so an older time after that long is the agent's clock set back
		// (NTP, a reboot without a real-time clock), and it must not read as silence.
		if cur != nil && !a.LastSeen.After(cur.LastSeen) && !cur.LastSeen.After(now.Add(f.staleAfter)) &&
			now.Sub(cur.Received) < f.staleAfter/2 {
			return nil
		}
		var rev uint64
		if cur == nil {
			rev, err = f.kv.Create(ctx, key, data)
		} else {
			rev, err = f.kv.Update(ctx, key, data, cur.revision)
		}
		if err == nil {
			a.revision = rev
			f.mu.Lock()
			if c := f.agents[key]; c == nil || c.revision < rev {
				f.agents[key] = &a
			}
			f.mu.Unlock()
			return nil
		}
		var apiErr *jetstream.APIError
		if !errors.Is(err, jetstream.ErrKeyExists) && !(errors.As(err, &apiErr) &&
			(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)) {
			return fmt.Errorf("fleet: store %s: %w", key, err)
		}
		// Another replica wrote first: read what it wrote and compare again.
		e, gerr := f.kv.Get(ctx, key)
		if gerr != nil {
			return fmt.Errorf("fleet: read %s: %w", key, gerr)
		}
		f.remote(e)
	}
	return fmt.Errorf("fleet: store %s: still conflicting after 10 attempts", key)
}

func (f *Fleet) view(a *Agent, now time.Time) View {
	v := View{Agent: *a, AgeSeconds: now.Sub(a.Received).Seconds()}
	v.Stale = now.Sub(a.Received) > f.staleAfter
	for _, b := range a.Buffer {
		v.BufferRecords += b.Records
		v.OldestSeconds = max(v.OldestSeconds, b.OldestAge)
		for _, n := range b.Dropped {
			v.Dropped += n
		}
	}
	return v
}

// List returns every agent, sorted by site and id.
func (f *Fleet) List() []View {
	now := f.now()
	f.mu.RLock()
	out := make([]View, 0, len(f.agents))
	for _, a := range f.agents {
		out = append(out, f.view(a, now))
	}
	f.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Site != out[j].Site {
			return out[i].Site < out[j].Site
		}
		return out[i].Agent.Agent < out[j].Agent.Agent
	})
	return out
}

// Get returns one agent.
func (f *Fleet) Get(site, agent string) (View, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a := f.agents[kvkey.Join(site, agent)]
	if a == nil {
		return View{}, false
	}
	return f.view(a, f.now()), true
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
