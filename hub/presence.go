package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/state/kvkey"
	"github.com/gemba-io/gemba/internal/kvretry"
)

// presenceBucket holds one key per replica name (hub.id): the process running under that name.
// The guard's decision claims, the approvals being applied and the outbox's delivery leases are
// owned by the replica name, so two live processes with one name would take each other's for
// their own and act twice.
const presenceBucket = "GEMBA_REPLICAS"

// presenceLease is the bucket's TTL: the server removes (by its own clock, so no replica's clock
// matters) the presence of a process that stopped refreshing it — killed, hung, cut off from NATS.
// 5 s: a replica restarted right after a SIGKILL waits at most that long (plus a refresh), and a
// refresh every second leaves four to a NATS hiccup before the lease lapses. A lapse alone is
// harmless: the running replica registers again when nobody else has taken the name.
const (
	presenceLease   = 5 * time.Second
	presenceRefresh = time.Second
	// presenceRefuseAfter: a starting replica that has seen the name refreshed for this long
	// refuses to start (it waits for a replica that is shutting down cleanly meanwhile).
	presenceRefuseAfter = 2 * presenceLease
)

// errNameTaken: another live process runs under this replica name.
var errNameTaken = errors.New("replica name in use")

// presenceRecord is a presence key's value.
type presenceRecord struct {
	Instance string    `json:"instance"` // random, per process
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	Version  string    `json:"version"`
	Since    time.Time `json:"since"`
}

func (r presenceRecord) String() string {
	return fmt.Sprintf("instance %s on host %s, pid %d, since %s", r.Instance, r.Host, r.PID, r.Since.Format(time.RFC3339))
}

// presence is this process's hold on its replica name.
type presence struct {
	kv   jetstream.KeyValue
	name string
	key  string
	rec  presenceRecord
	val  []byte
	log  *slog.Logger

	rev     uint64        // of the last write of ours; keep's alone once it runs
	lost    chan struct{} // closed when another instance took the name over
	why     atomic.Pointer[string]
	cancel  context.CancelFunc
	stopped sync.WaitGroup
}

// claimPresence registers this process under the replica name, waiting while another process
// holds it (a killed one's presence lapses within the lease) and refusing (errNameTaken) when that
// one keeps refreshing it. Other errors (JetStream not answering) are the caller's to retry.
// waiting is called with the reason while it waits.
func claimPresence(ctx context.Context, js jetstream.JetStream, name string, replicas int, log *slog.Logger, waiting func(string)) (*presence, error) {
	kv, err := kvretry.KeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: presenceBucket, History: 1, TTL: presenceLease,
		Replicas: replicas, Description: "gemba-hub: the process running under each replica name (hub.id), refreshed while it runs"})
	if err != nil {
		return nil, fmt.Errorf("replica presence bucket %s: %w", presenceBucket, err)
	}
	host, _ := os.Hostname()
	var b [8]byte
	_, _ = rand.Read(b[:])
	p := &presence{kv: kv, name: name, key: kvkey.Escape(name), log: log, lost: make(chan struct{}),
		rec: presenceRecord{Instance: hex.EncodeToString(b[:]), Host: host, PID: os.Getpid(), Version: Version, Since: time.Now().UTC()}}
	p.val, _ = json.Marshal(p.rec)

	var seenRev uint64          // the other process's revision last seen
	var seenAt, first time.Time // when it was first seen at that revision; when it was first seen at all
	for {
		rev, err := kv.Create(ctx, p.key, p.val)
		if err == nil {
			p.rev = rev
			return p, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("replica presence %s: register: %w", name, err)
		}
		e, err := kv.Get(ctx, p.key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released or lapsed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("replica presence %s: read: %w", name, err)
		}
		var other presenceRecord
		_ = json.Unmarshal(e.Value(), &other)
		now := time.Now()
		switch {
		case first.IsZero():
			first, seenRev, seenAt = now, e.Revision(), now
			why := fmt.Sprintf("waiting for replica name %q (hub.id) to be free: another process holds it (%s); "+
				"a replica killed without stopping is taken over once its presence lapses (%s)", name, other, presenceLease)
			log.Warn("replica name in use: waiting for its presence to lapse", "replica", name, "holder", other.String(), "lease", presenceLease)
			waiting(why)
		case e.Revision() != seenRev:
			seenRev, seenAt = e.Revision(), now
		case now.Sub(seenAt) > presenceLease+presenceRefresh:
			// Not refreshed for longer than a lease: that process is gone (the server's expiry is
			// only later). Taken over by compare-and-set on what was seen.
			if rev, err := kv.Update(ctx, p.key, p.val, seenRev); err == nil {
				log.Info("replica name taken over from a process that stopped refreshing it", "replica", name, "holder", other.String())
				p.rev = rev
				return p, nil
			}
			continue
		}
		if seenAt != first && now.Sub(first) > presenceRefuseAfter {
			return nil, fmt.Errorf("%w: replica name %q (hub.id) is held by another running process (%s), refreshed "+
				"within the last %s: two replicas with one name take each other's decision claims, approvals and "+
				"delivery leases for their own; give every replica its own hub.id (it defaults to the host name)",
				errNameTaken, name, other, presenceLease)
		}
		if err := kvretry.Sleep(ctx, presenceRefresh/4); err != nil {
			return nil, err
		}
	}
}

// keep refreshes the presence until release. Should another instance hold the name meanwhile (this
// process was paused or cut off past the lease, and a process of the same name registered), it
// stops refreshing, says why, and closes lost: the replica stops deciding and acting for good
// (the other one acts under the name now; a restart of this one then waits or is refused).
func (p *presence) keep() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.stopped.Go(func() {
		t := time.NewTicker(presenceRefresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if p.refresh(ctx) {
				return
			}
		}
	})
}

// refresh writes the presence once; it reports whether the name was lost.
func (p *presence) refresh(ctx context.Context) bool {
	rctx, cancel := context.WithTimeout(ctx, presenceRefresh)
	defer cancel()
	rev, err := p.kv.Update(rctx, p.key, p.val, p.rev)
	if err == nil {
		p.rev = rev
		return false
	}
	e, gerr := p.kv.Get(rctx, p.key)
	var cur presenceRecord
	switch {
	case errors.Is(gerr, jetstream.ErrKeyNotFound):
		// Lapsed (no refresh got through for a lease: NATS away, the process paused) and nobody
		// took it: register again.
		if rev, err := p.kv.Create(rctx, p.key, p.val); err == nil {
			p.log.Warn("replica presence had lapsed (not refreshed within the lease): registered again", "replica", p.name, "lease", presenceLease)
			p.rev = rev
		}
		return false
	case gerr != nil:
		p.log.Debug("replica presence not refreshed", "replica", p.name, "err", err, "read_err", gerr)
		return false
	case json.Unmarshal(e.Value(), &cur) == nil && cur.Instance == p.rec.Instance:
		p.rev = e.Revision() // our own write whose answer was lost
		return false
	}
	why := fmt.Sprintf("replica name %q (hub.id) taken over by another process (%s): this replica stopped deciding "+
		"and delivering actions so that the name does not act twice; give every replica its own hub.id and restart it", p.name, cur)
	p.why.Store(&why)
	p.log.Error("replica name taken over by another process: decisions and deliveries stopped", "replica", p.name, "holder", cur.String())
	close(p.lost)
	return true
}

// reason is why the replica stopped acting ("" while it holds its name).
func (p *presence) reason() string {
	if p == nil {
		return ""
	}
	if w := p.why.Load(); w != nil {
		return *w
	}
	return ""
}

// release stops refreshing and, unless another process holds the name now, removes the presence,
// so that a replica of the same name starts at once.
func (p *presence) release() {
	if p.cancel != nil {
		p.cancel()
	}
	p.stopped.Wait()
	if p.reason() != "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := p.kv.Delete(ctx, p.key, jetstream.LastRevision(p.rev)); err != nil {
		p.log.Warn("replica presence not released: a restart under this name waits for it to lapse", "replica", p.name,
			"lease", presenceLease, "err", err)
	}
}

// claimName registers the replica name before anything runs under it, retrying while JetStream
// does not answer (saying so on /readyz) until ctx ends; a name another process keeps is the error.
func (h *Hub) claimName(ctx context.Context, js jetstream.JetStream) (*presence, error) {
	wait := 250 * time.Millisecond
	for {
		p, err := claimPresence(ctx, js, h.cfg.Hub.ID, h.cfg.NATS.Replicas, h.log, h.setWhy)
		if err == nil {
			h.setWhy("starting")
			return p, nil
		}
		if errors.Is(err, errNameTaken) || ctx.Err() != nil {
			return nil, err
		}
		h.setWhy("registering the replica name: " + err.Error())
		h.log.Warn("replica name not registered yet, retrying", "err", err, "retry_in", wait)
		if kvretry.Sleep(ctx, wait) != nil {
			return nil, ctx.Err()
		}
		wait = min(2*wait, 10*time.Second)
	}
}
