package fleet

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// bucket binds the test's own handle on the fleet bucket, as another hub version (or a corrupting
// hand) would write it.
func bucket(t *testing.T, url string) (jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	_, js := natstest.Connect(t, url)
	kv, err := js.KeyValue(context.Background(), "FLEET")
	if err != nil {
		t.Fatal(err)
	}
	return js, kv
}

// TestUnreadableEntryIsSwept: an entry that does not decode as a heartbeat record (written by
// another hub version, or corrupted) is deleted by the sweep once it is older than forget_after by
// the time the bucket stored it — by one replica, logged once with its key — and kept before that.
// It stayed for ever: forget_after swept only the entries it could decode.
func TestUnreadableEntryIsSwept(t *testing.T) {
	n := natstest.JetStream(t)
	var logs testutil.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	a, b := openForget(t, n.URL(), log), openForget(t, n.URL(), log)
	_, kv := bucket(t, n.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := kv.Put(ctx, "plant1.odd", []byte(`{"agent":7}`)); err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "plant1.odd")
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "both replicas to read the unreadable entry", func() bool {
		return strings.Count(logs.String(), "key=plant1.odd") == 2
	})
	for _, f := range []*Fleet{a, b} {
		f.now = func() time.Time { return e.Created().Add(time.Hour) }
	}
	forgetAll(ctx, a, b)
	if _, err := kv.Get(ctx, "plant1.odd"); err != nil {
		t.Fatalf("an unreadable entry an hour old was swept (forget_after 7 days): %v", err)
	}
	for _, f := range []*Fleet{a, b} {
		f.now = func() time.Time { return e.Created().Add(DefaultForgetAfter + time.Minute) }
	}
	forgetAll(ctx, a, b)
	if _, err := kv.Get(ctx, "plant1.odd"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("an unreadable entry stored longer than forget_after ago is still in the bucket: %v", err)
	}
	if c := strings.Count(logs.String(), "key=plant1.odd"); c != 3 {
		t.Errorf("%d log lines name the unreadable entry, want one per replica reading it and one deleting it:\n%s", c, logs.String())
	}
	if l := a.List(); len(l) != 0 {
		t.Errorf("List: %+v", l)
	}
}

// forgetAll runs every replica's sweep at once (the replicas race to delete).
func forgetAll(ctx context.Context, fs ...*Fleet) {
	var wg sync.WaitGroup
	for _, f := range fs {
		wg.Go(func() { f.forget(ctx) })
	}
	wg.Wait()
}

// TestHeartbeatOverUnreadableEntry: an agent whose entry does not decode (another hub version
// wrote it, or it was corrupted) heartbeats again: its heartbeat replaces the entry and the agent
// is listed. Every one of its heartbeats failed ("still conflicting after 10 attempts", each one
// redelivered): the hub compared against the entry it could not read, over and over.
func TestHeartbeatOverUnreadableEntry(t *testing.T) {
	n := natstest.JetStream(t)
	var logs testutil.Buffer
	f := openForget(t, n.URL(), slog.New(slog.NewTextHandler(&logs, nil)))
	_, kv := bucket(t, n.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now().UTC()
	// One the fleet holds, then overwritten by what it cannot read; and one it never could read.
	if err := f.Heartbeat(ctx, &signal.Header{Agent: "gw1", Site: "plant1"}, &signal.Status{Time: now}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"plant1.gw1", "plant1.gw2"} {
		if _, err := kv.Put(ctx, k, []byte("\x00corrupt")); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 20*time.Second, "the fleet to read both unreadable entries", func() bool {
		return strings.Contains(logs.String(), "key=plant1.gw1") && strings.Contains(logs.String(), "key=plant1.gw2")
	})
	for i, id := range []string{"gw1", "gw2"} {
		at := now.Add(time.Duration(i+1) * time.Second)
		if err := f.Heartbeat(ctx, &signal.Header{Agent: id, Site: "plant1"}, &signal.Status{Time: at}, time.Time{}); err != nil {
			t.Fatalf("%s: a heartbeat over an unreadable entry: %v", id, err)
		}
		if v, ok := f.Get("plant1", id); !ok || !v.LastSeen.Equal(at) {
			t.Errorf("%s: after its heartbeat: %+v %v", id, v, ok)
		}
	}
}

// TestEntryNotNamingItsKey: an entry that decodes but whose site and agent do not give its key
// (another hub version's record with renamed fields, a hand-written one) is unreadable too: it
// was listed as an agent without a name, each one under the same site and id, so that the API's
// paging (after the last site and agent of a page) skipped all but one, or started over from the
// first page for ever (an empty cursor is the first page).
func TestEntryNotNamingItsKey(t *testing.T) {
	n := natstest.JetStream(t)
	f := open(t, n.URL())
	_, kv := bucket(t, n.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for _, e := range []struct{ key, value string }{
		{"plant1.x", `{"agent_id":"x","received":"` + now + `"}`},
		{"plant1.y", `{"agent_id":"y","received":"` + now + `"}`},
		{"plant1.z", `{"agent":"w","site":"plant1","received":"` + now + `"}`},
		{"plant1.gw1", `{"agent":"gw1","site":"plant1","received":"` + now + `"}`},
	} {
		if _, err := kv.Put(ctx, e.key, []byte(e.value)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 20*time.Second, "the fleet to read the last entry", func() bool {
		_, ok := f.Get("plant1", "gw1")
		return ok
	})
	if l := f.List(); len(l) != 1 {
		t.Errorf("List: %d agents, want gw1 alone: %+v", len(l), l)
	}
	var pages, seen int
	for site, agent := "", ""; pages < 10; pages++ {
		p := f.Page(site, agent, 1)
		if len(p) == 0 {
			break
		}
		seen++
		site, agent = p[0].Site, p[0].Agent.Agent
	}
	if seen != 1 {
		t.Errorf("paging one at a time listed %d agents in %d pages, want gw1 alone", seen, pages)
	}
}
