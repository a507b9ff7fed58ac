package dedup

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, js := natstest.Connect(t, natstest.JetStream(t).URL())
	return js
}

func TestClaims(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	m, err := Open(ctx, js, Config{Bucket: "D", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.ClaimAll(ctx, []Claim{{"gw1:features:abc:1", 10}, {"gw1:features:abc:2", 11}, {"gw1:features:abc:1", 12}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []Verdict{Fresh, Fresh, Duplicate}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("verdicts %v, want %v (the second copy of an id in one batch is a duplicate)", got, want)
	}
	// A redelivery of the message that claimed an id is not a duplicate; a re-publish (a new stream
	// message with the same identity, beyond JetStream's window) is.
	got, err = m.ClaimAll(ctx, []Claim{{"gw1:features:abc:1", 10}, {"gw1:features:abc:2", 99}, {"gw1:features:other:1", 13}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []Verdict{Fresh, Duplicate, Fresh}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("verdicts %v, want %v", got, want)
	}
}

// TestReplicasRace: two replicas (two connections) claim the same identities for different stream
// messages at once: each identity is owned by exactly one.
func TestReplicasRace(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	a, err := Open(ctx, js, Config{Bucket: "D", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	js2 := startJSConn(t, js)
	b, err := Open(ctx, js2, Config{Bucket: "D", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	claims := func(base uint64) []Claim {
		cs := make([]Claim, n)
		for i := range cs {
			cs[i] = Claim{ID: fmt.Sprintf("id-%d", i), StreamSeq: base + uint64(i)}
		}
		return cs
	}
	var va, vb []Verdict
	var ea, eb error
	var wg sync.WaitGroup
	wg.Go(func() { va, ea = a.ClaimAll(ctx, claims(1000)) })
	wg.Go(func() { vb, eb = b.ClaimAll(ctx, claims(5000)) })
	wg.Wait()
	if ea != nil || eb != nil {
		t.Fatal(ea, eb)
	}
	for i := range n {
		if (va[i] == Fresh) == (vb[i] == Fresh) {
			t.Fatalf("id-%d: replica a %v, replica b %v: exactly one must own it", i, va[i], vb[i])
		}
	}
}

func startJSConn(t *testing.T, js jetstream.JetStream) jetstream.JetStream {
	t.Helper()
	_, js2 := natstest.Connect(t, js.Conn().ConnectedUrl())
	return js2
}

// TestExpiry: an identity is forgotten after the TTL (the bucket's MaxAge).
func TestExpiry(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	m, err := Open(ctx, js, Config{Bucket: "D", TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := m.ClaimAll(ctx, []Claim{{"x", 1}}); err != nil || v[0] != Fresh {
		t.Fatal(v, err)
	}
	if v, err := m.ClaimAll(ctx, []Claim{{"x", 2}}); err != nil || v[0] != Duplicate {
		t.Fatal(v, err)
	}
	testutil.WaitFor(t, 10*time.Second, "expiry", func() bool {
		v, err := m.ClaimAll(ctx, []Claim{{"x", 3}})
		return err == nil && v[0] == Fresh
	})
}

func TestBadConfig(t *testing.T) {
	js := startJS(t)
	if _, err := Open(context.Background(), js, Config{Bucket: "D"}); err == nil {
		t.Fatal("zero ttl accepted")
	}
	if _, err := Open(context.Background(), js, Config{Bucket: "bad bucket", TTL: time.Hour}); err == nil {
		t.Fatal("bad bucket name accepted")
	}
}

// TestDone: once a claim is marked done, even the message that claimed it is a duplicate (a
// consumer re-reading the stream applies nothing twice); while pending, its redelivery is fresh.
func TestDone(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	m, err := Open(ctx, js, Config{Bucket: "D", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c := []Claim{{"a", 7}, {"b", 8}}
	if v, err := m.ClaimAll(ctx, c); err != nil || v[0] != Fresh || v[1] != Fresh {
		t.Fatal(v, err)
	}
	if v, err := m.ClaimAll(ctx, c); err != nil || v[0] != Fresh || v[1] != Fresh {
		t.Fatalf("redelivery while pending: %v %v, want fresh", v, err)
	}
	if err := m.DoneAll(ctx, c[:1]); err != nil {
		t.Fatal(err)
	}
	if v, err := m.ClaimAll(ctx, c); err != nil || v[0] != Duplicate || v[1] != Fresh {
		t.Fatalf("after done: %v %v, want duplicate for a, fresh for pending b", v, err)
	}
}

// TestPins: the first claim of an identity stores its pin; a redelivery (the same stream message)
// gets that pin back, not its own, and a duplicate gets none.
func TestPins(t *testing.T) {
	js := startJS(t)
	ctx := context.Background()
	m, err := Open(ctx, js, Config{Bucket: "D", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	claims := []Claim{{"a", 1}, {"b", 2}}
	v, rec, err := m.ClaimPinned(ctx, claims, [][]byte{[]byte("first"), nil})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(v) != "[fresh fresh]" || string(rec[0]) != "first" || rec[1] != nil {
		t.Fatalf("first claims: %v, pins %q", v, rec)
	}
	v, rec, err = m.ClaimPinned(ctx, []Claim{{"a", 1}, {"a", 7}, {"b", 2}}, [][]byte{[]byte("second"), []byte("other"), []byte("late")})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(v) != "[fresh duplicate fresh]" || string(rec[0]) != "first" || rec[1] != nil || string(rec[2]) != "late" {
		t.Fatalf("redelivery: %v, pins %q; want the first delivery's pin for a, none for the duplicate, b's first pin", v, rec)
	}
	// The marker's value is what a replica of an earlier release reads: the stream sequence, as before.
	if v, err := m.ClaimAll(ctx, []Claim{{"a", 1}}); err != nil || v[0] != Fresh {
		t.Fatalf("the marker of a pinned claim reads as before: %v %v", v, err)
	}
	if e, err := m.kv.Get(ctx, Key("a")); err != nil || string(e.Value()) != "1" {
		t.Fatalf("marker value %q (%v), want \"1\"", e.Value(), err)
	}
	// Marked done, the identity is a duplicate and its pin gone with the pending marker.
	if err := m.DoneAll(ctx, []Claim{{"a", 1}}); err != nil {
		t.Fatal(err)
	}
	if v, rec, err := m.ClaimPinned(ctx, []Claim{{"a", 1}}, [][]byte{[]byte("x")}); err != nil || v[0] != Duplicate || rec[0] != nil {
		t.Fatalf("after done: %v %q %v", v, rec, err)
	}
}
