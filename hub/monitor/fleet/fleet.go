// Package fleet keeps the latest heartbeat of every agent (buffer depth, drops, collectors,
// versions) in a KV bucket all hub replicas share, tells which agents went quiet, and forgets those
// not heard from for forget_after: their entries are deleted, and the delete markers purged
// forget_after later; an entry it cannot read is deleted once forget_after old.
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
// is bounded by the hub's clock and staleness is judged by Received: when the agents' stream stored
// the heartbeat (the server's clock, at most the hub's now), not when a hub read it (a heartbeat
// replayed after a hub restart is as old as it is).
type Agent struct {
	Agent         string                           `json:"agent"`
	Site          string                           `json:"site"`
	LastSeen      time.Time                        `json:"last_seen"`            // the heartbeat's own time, at most stale_after past Received
	Received      time.Time                        `json:"received"`             // when the agents' stream stored it: staleness is judged by it
	StreamSeq     uint64                           `json:"stream_seq,omitempty"` // its sequence in the agents' stream: the later wins (see newer)
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
	// AgeSeconds is how long ago the agents' stream stored the heartbeat (by the hub's clock, as
	// Stale: an agent clock ahead or behind does not show in it).
	AgeSeconds float64 `json:"age_s"`
	// BufferRecords and Dropped sum the agent's buffer streams.
	BufferRecords uint64  `json:"buffer_records"`
	Dropped       uint64  `json:"dropped"`
	OldestSeconds float64 `json:"buffer_oldest_age_s"`
}

// Fleet is the heartbeat table. Safe for concurrent use.
type Fleet struct {
	kv          jetstream.KeyValue
	staleAfter  time.Duration
	forgetAfter time.Duration
	log         *slog.Logger
	now         func() time.Time

	stream jetstream.Stream // the bucket's, to purge old delete markers
	subj   string           // the bucket's subject prefix: $KV.<bucket>.

	mu     sync.RWMutex
	agents map[string]*Agent // by KV key
	// unreadable holds the entries that do not decode as an Agent (another hub version wrote them,
	// or they are corrupt), markers the delete markers of forgotten agents, by KV key: the sweep
	// removes both once forget_after old. A key is in one of the three maps at most.
	unreadable, markers map[string]entry

	stop func() // ends the bucket watch and the sweep
}

// entry is a bucket entry the fleet holds no agent for: its revision and when the bucket stored it.
type entry struct {
	revision uint64
	created  time.Time
}

// DefaultForgetAfter is how long an agent not heard from stays in the fleet by default.
const DefaultForgetAfter = 7 * 24 * time.Hour

// Open creates or binds the bucket, loads it and starts watching it, and sweeps it for agents not
// heard from for forgetAfter (0: DefaultForgetAfter).
func Open(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, staleAfter, forgetAfter time.Duration, log *slog.Logger) (*Fleet, error) {
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
	if forgetAfter <= 0 {
		forgetAfter = DefaultForgetAfter
	}
	st, err := js.Stream(ctx, "KV_"+kv.Bucket())
	if err != nil {
		return nil, fmt.Errorf("fleet bucket %s: %w", bucket, err)
	}
	f := &Fleet{kv: kv, stream: st, subj: "$KV." + kv.Bucket() + ".", staleAfter: staleAfter, forgetAfter: forgetAfter, log: log,
		now: time.Now, agents: map[string]*Agent{}, unreadable: map[string]entry{}, markers: map[string]entry{}}
	stop, err := kvwatch.Follow(ctx, js, kv, f.remote, kvwatch.Options{Log: log})
	if err != nil {
		return nil, fmt.Errorf("fleet bucket %s: %w", bucket, err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { f.sweepLoop(sctx) })
	f.stop = func() {
		cancel()
		wg.Wait()
		stop()
	}
	return f, nil
}

// sweepLoop forgets the agents gone for forget_after, every sweepEvery.
func (f *Fleet) sweepLoop(ctx context.Context) {
	t := time.NewTicker(min(max(f.forgetAfter/8, time.Second), sweepEvery))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.forget(ctx)
		}
	}
}

// sweepEvery bounds the time between sweeps.
const sweepEvery = 10 * time.Minute

// forget deletes from the bucket the agents not heard from for forget_after: each once, whichever
// replica gets there first (the delete is conditional on the revision it saw, so a heartbeat that
// arrived meanwhile keeps the agent, and the replicas that lose say nothing). It deletes the same
// way the entries it cannot decode that the bucket stored longer than forget_after ago, and purges
// the delete markers older than forget_after (kept that long so that every replica's watch sees
// the agent go).
func (f *Fleet) forget(ctx context.Context) {
	now := f.now()
	type gone struct {
		key string
		a   Agent
	}
	var agents []gone
	var unreadable, markers []string
	revs := map[string]entry{}
	f.mu.RLock()
	for key, a := range f.agents {
		if f.forgotten(a, now) {
			agents = append(agents, gone{key, *a})
		}
	}
	for key, e := range f.unreadable {
		if now.Sub(e.created) > f.forgetAfter {
			unreadable, revs[key] = append(unreadable, key), e
		}
	}
	for key, e := range f.markers {
		if now.Sub(e.created) > f.forgetAfter {
			markers, revs[key] = append(markers, key), e
		}
	}
	f.mu.RUnlock()
	for _, e := range agents {
		err := f.kv.Delete(ctx, e.key, jetstream.LastRevision(e.a.revision))
		switch {
		case err == nil:
			f.log.Info("agent forgotten: no heartbeat for fleet.forget_after, its entry is deleted", "agent", e.a.Agent, "site", e.a.Site,
				"received", e.a.Received, "forget_after", f.forgetAfter)
			f.mu.Lock()
			if c := f.agents[e.key]; c != nil && c.revision == e.a.revision {
				delete(f.agents, e.key)
			}
			f.mu.Unlock()
		case conflict(err):
			// Another replica deleted it, or a heartbeat came: the watch brings what is so.
		case ctx.Err() != nil:
			return
		default:
			f.log.Warn("fleet: agent gone for forget_after not deleted (tried again at the next sweep)", "agent", e.a.Agent,
				"site", e.a.Site, "err", err)
		}
	}
	for _, key := range unreadable {
		e := revs[key]
		err := f.kv.Delete(ctx, key, jetstream.LastRevision(e.revision))
		switch {
		case err == nil:
			f.log.Info("fleet entry unreadable and stored longer than fleet.forget_after ago: deleted", "key", key,
				"revision", e.revision, "stored", e.created, "forget_after", f.forgetAfter)
			f.drop(f.unreadable, key, e.revision)
		case conflict(err):
		case ctx.Err() != nil:
			return
		default:
			f.log.Warn("fleet: unreadable entry older than forget_after not deleted (tried again at the next sweep)", "key", key, "err", err)
		}
	}
	for _, key := range markers {
		// Only the messages up to the marker go: a heartbeat stored after it (the agent back, not
		// yet seen here) is kept. Every replica purges each marker once; the later ones purge nothing.
		e := revs[key]
		err := f.stream.Purge(ctx, jetstream.WithPurgeSubject(f.subj+key), jetstream.WithPurgeSequence(e.revision+1))
		switch {
		case err == nil:
			f.drop(f.markers, key, e.revision)
		case ctx.Err() != nil:
			return
		default:
			f.log.Warn("fleet: delete marker of an agent forgotten forget_after ago not purged (tried again at the next sweep)", "key", key, "err", err)
		}
	}
}

// drop removes key from m if it still holds revision rev.
func (f *Fleet) drop(m map[string]entry, key string, rev uint64) {
	f.mu.Lock()
	if e, ok := m[key]; ok && e.revision == rev {
		delete(m, key)
	}
	f.mu.Unlock()
}

// forgotten reports whether a was last heard from longer than forget_after before now.
func (f *Fleet) forgotten(a *Agent, now time.Time) bool { return now.Sub(a.Received) > f.forgetAfter }

// conflict reports whether err is a write refused because the key changed since the revision given.
func conflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Close stops watching.
func (f *Fleet) Close() {
	if f.stop != nil {
		f.stop()
		f.stop = nil
	}
}

// remote takes an entry of the bucket (from the watch, or read back after a conflict) unless what
// is held for its key is as recent.
func (f *Fleet) remote(e jetstream.KeyValueEntry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key, rev := e.Key(), e.Revision()
	if rev <= f.held(key) {
		return
	}
	var a Agent
	var err error
	if e.Operation() == jetstream.KeyValuePut {
		if err = json.Unmarshal(e.Value(), &a); err == nil && kvkey.Join(a.Site, a.Agent) != key {
			// Listed, it would be an agent without a name (or under another's), and the API's paging
			// by site and agent would skip or repeat it.
			err = fmt.Errorf("its site %q and agent %q are not its key", a.Site, a.Agent)
		}
		if err != nil {
			// Logged once per replica: the same revision read again (a new watch) is held already.
			f.log.Error("fleet entry unreadable, ignored (the next heartbeat of its agent replaces it, the sweep deletes it once older than fleet.forget_after)",
				"key", key, "revision", rev, "err", err)
		}
	}
	delete(f.agents, key)
	delete(f.unreadable, key)
	delete(f.markers, key)
	switch {
	case e.Operation() != jetstream.KeyValuePut:
		f.markers[key] = entry{rev, e.Created()}
	case err != nil:
		f.unreadable[key] = entry{rev, e.Created()}
	default:
		a.revision = rev
		f.agents[key] = &a
	}
}

// held is the revision of what the fleet holds for key (0: nothing). Called with f.mu held.
func (f *Fleet) held(key string) uint64 {
	if a := f.agents[key]; a != nil {
		return a.revision
	}
	return max(f.unreadable[key].revision, f.markers[key].revision)
}

// Heartbeat is HeartbeatSeq without the agents' stream sequence: the heartbeat is ordered by times
// alone.
func (f *Fleet) Heartbeat(ctx context.Context, h *signal.Header, st *signal.Status, stored time.Time) error {
	return f.HeartbeatSeq(ctx, h, st, stored, 0)
}

// HeartbeatSeq stores a status if it is newer than the one known (heartbeats of one agent can reach
// different replicas out of order; see newer). stored is when the agents' stream stored it (the
// message's timestamp; zero: now): a heartbeat the stream delivers again after a hub restart is
// that old, and its agent may be dead. seq is its sequence in the agents' stream (0: unknown).
func (f *Fleet) HeartbeatSeq(ctx context.Context, h *signal.Header, st *signal.Status, stored time.Time, seq uint64) error {
	key := kvkey.Join(h.Site, h.Agent)
	now := f.now().UTC()
	received := now
	if !stored.IsZero() && stored.Before(now) { // a server clock ahead of the hub's is taken as now
		received = stored.UTC()
	}
	a := Agent{
		Agent: h.Agent, Site: h.Site, LastSeen: minTime(st.Time.UTC(), now.Add(f.staleAfter)), Received: received, StreamSeq: seq,
		Version: st.Version, Commit: st.Commit, ConfigVersion: st.ConfigVersion, Incarnation: h.Incarnation,
		UptimeSeconds: st.Uptime, Buffer: st.Buffer, Collectors: st.Collectors,
	}
	data, err := json.Marshal(&a)
	if err != nil {
		return fmt.Errorf("fleet: encode %s: %w", key, err)
	}
	for range 10 {
		f.mu.RLock()
		cur, odd := f.agents[key], f.unreadable[key]
		f.mu.RUnlock()
		if cur != nil && !f.newer(&a, cur, !stored.IsZero(), now) {
			return nil
		}
		var rev uint64
		switch {
		case cur != nil:
			rev, err = f.kv.Update(ctx, key, data, cur.revision)
		case odd.revision != 0:
			// An entry this hub cannot read (another version's, or corrupt) is replaced.
			rev, err = f.kv.Update(ctx, key, data, odd.revision)
		default:
			rev, err = f.kv.Create(ctx, key, data)
		}
		if err == nil {
			a.revision = rev
			f.mu.Lock()
			if rev > f.held(key) {
				delete(f.unreadable, key)
				delete(f.markers, key)
				f.agents[key] = &a
			}
			f.mu.Unlock()
			return nil
		}
		if !conflict(err) {
			return fmt.Errorf("fleet: store %s: %w", key, err)
		}
		// Another replica wrote first: read what it wrote and compare again.
		e, gerr := f.kv.Get(ctx, key)
		if errors.Is(gerr, jetstream.ErrKeyNotFound) {
			// Forgotten (deleted) by a replica meanwhile: created afresh on the next attempt.
			f.mu.Lock()
			if f.agents[key] == cur {
				delete(f.agents, key)
			}
			f.mu.Unlock()
			f.drop(f.unreadable, key, odd.revision)
			continue
		}
		if gerr != nil {
			return fmt.Errorf("fleet: read %s: %w", key, gerr)
		}
		f.remote(e)
	}
	return fmt.Errorf("fleet: store %s: still conflicting after 10 attempts", key)
}

// newer reports whether heartbeat a is to replace cur, the one held.
//
// Both from the agents' stream (an older hub wrote no sequence), the later sequence in it wins,
// whatever the times: neither the agent's clock set back nor the server's stepped back holds a
// heartbeat back. A lower sequence wins only if cur was stored more than half of stale_after before
// it: the stream was created again and its sequences started over (one delivered late to this
// replica was stored before cur, or within seconds with the server's clock stepped back).
//
// Otherwise (no sequence, or the same message again), by times: one the stream stored before cur
// (redelivered, or read late by this replica) never replaces it, however long ago that came (the
// agent's age would go back); of two stored at the same time or later, the later agent time wins,
// or any once the hub received cur half of stale_after ago or more (the agent's clock set back
// must not read as silence); a cur whose agent time is further ahead than LastSeen is now bounded
// (an older hub wrote it) is not kept by it.
func (f *Fleet) newer(a, cur *Agent, stored bool, now time.Time) bool {
	if a.StreamSeq != 0 && cur.StreamSeq != 0 && a.StreamSeq != cur.StreamSeq {
		return a.StreamSeq > cur.StreamSeq || a.Received.Sub(cur.Received) > f.staleAfter/2
	}
	if !a.LastSeen.After(cur.LastSeen) && !cur.LastSeen.After(now.Add(f.staleAfter)) && now.Sub(cur.Received) < f.staleAfter/2 {
		return false
	}
	return !stored || !a.Received.Before(cur.Received)
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

// List returns every agent, sorted by site and id; those not heard from for forget_after are left
// out (whether or not a sweep deleted them yet).
func (f *Fleet) List() []View {
	now := f.now()
	f.mu.RLock()
	out := make([]View, 0, len(f.agents))
	for _, a := range f.agents {
		if !f.forgotten(a, now) {
			out = append(out, f.view(a, now))
		}
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
	a, now := f.agents[kvkey.Join(site, agent)], f.now()
	if a == nil || f.forgotten(a, now) {
		return View{}, false
	}
	return f.view(a, now), true
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
