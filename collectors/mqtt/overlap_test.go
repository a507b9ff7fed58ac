package mqtt

import (
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/internal/testutil"
)

// overlapCounts counts samples by signal name.
func overlapCounts(em *memEmitter) map[string]int {
	n := map[string]int{}
	for _, s := range em.all() {
		n[s.Signal]++
	}
	return n
}

// TestOverlappingSubscriptionsStoreOnce: with two subscriptions whose filters overlap, a broker
// may send one copy of a message per matching subscription (MQTT 3.1.1 allows it; mosquitto does
// with allow_duplicate_messages, its future default). Each copy is matched against every filter,
// so each message must still give each subscription's samples once, retained messages included.
func TestOverlappingSubscriptionsStoreOnce(t *testing.T) {
	mq := startMosquitto(t, "allow_duplicate_messages true\n")
	pub := newPublisher(t, mq.url(), "overlap-pub")
	if tok := pub.Publish("ov/r", 1, true, []byte("7")); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish retained: %v", tok.Error())
	}
	cfg := testConfig(mq.url(),
		Subscription{Topic: "ov/#", Format: FormatValue, Signal: "all.{topic}"},
		Subscription{Topic: "ov/+", Format: FormatValue, Signal: "one.{topic}"},
		Subscription{Topic: "$share/g/sh/+", Format: FormatValue, Signal: "sh.{topic}"})
	cfg.ClientID = "overlap-test"
	em := &memEmitter{}
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", DataDir: t.TempDir()}, em)
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
	publish(t, pub, "ov/x", 1, []byte("1"))
	publish(t, pub, "sh/y", 1, []byte("2"))
	// In order after ov/x (one publisher, QoS 1, in-order delivery): its copies came before.
	publish(t, pub, "ov/a/end", 1, []byte("3"))
	testutil.WaitFor(t, 10*time.Second, "the end marker", func() bool {
		n := overlapCounts(em)
		return n["all.ov.a.end"] > 0 && n["sh.sh.y"] > 0
	})
	want := map[string]int{"all.ov.r": 1, "one.ov.r": 1, "all.ov.x": 1, "one.ov.x": 1, "sh.sh.y": 1, "all.ov.a.end": 1}
	if got := overlapCounts(em); !maps.Equal(got, want) {
		t.Errorf("samples per signal %v, want %v", got, want)
	}
	if st, info := c.State(); st != "running" || info["failed_subscriptions"] != "" {
		t.Errorf("state %s %v, want running", st, info)
	}
}

// TestOverlapRefusedCoverFallsBack: when the broker refuses the wider of two overlapping filters
// (an ACL that allows ov/+ but not ov/#), the narrower one is still subscribed and delivers, and
// only the refused one is reported failed.
func TestOverlapRefusedCoverFallsBack(t *testing.T) {
	b := startMochi(t)
	b.stop()
	hook := &unsubHolder{deny: "ov/#", release: make(chan struct{})}
	b.startWith(hook, nil)
	t.Cleanup(func() { close(hook.release) })
	cfg := testConfig(b.url(),
		Subscription{Topic: "ov/#", Format: FormatValue, Signal: "all.{topic}"},
		Subscription{Topic: "ov/+", Format: FormatValue, Signal: "one.{topic}"})
	cfg.ClientID = "overlap-refused"
	em := &memEmitter{}
	reg := prometheus.NewRegistry()
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", DataDir: t.TempDir(), Metrics: reg}, em)
	testutil.WaitFor(t, 10*time.Second, "subscriptions reported", func() bool {
		st, _ := c.State()
		return st == "degraded" || st == "running"
	})
	if st, info := c.State(); st != "degraded" || info["failed_subscriptions"] != "ov/#" {
		t.Errorf("state %s %v, want degraded with failed_subscriptions ov/#", st, info)
	}
	if v := counterValue(t, reg, "gemba_mqtt_subscribe_failures_total", nil); v != 1 {
		t.Errorf("subscribe failures %v, want 1", v)
	}
	if got := b.subscriptions("overlap-refused"); !slices.Equal(got, []string{"ov/+"}) {
		t.Errorf("broker subscriptions %v, want [ov/+]", got)
	}
	pub := newPublisher(t, b.url(), "overlap-refused-pub")
	publish(t, pub, "ov/x", 1, []byte("1"))
	testutil.WaitFor(t, 10*time.Second, "one.ov.x", func() bool { return overlapCounts(em)["one.ov.x"] == 1 })
}

func TestFilterCovers(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"ov/#", "ov/+", true},
		{"ov/#", "ov", true}, // "ov/#" matches "ov"
		{"ov/#", "ov/#", true},
		{"#", "+/#", true},
		{"+/#", "#", false},
		{"ov/+", "ov/#", false},
		{"ov/+", "ov", false},
		{"ov/+", "ov/x", true},
		{"ov/+", "ov/x/y", false},
		{"ov/x", "ov/+", false},
		{"+/+", "a/b", true},
		{"#", "$SYS/x", false}, // '#' and '+' at the first level do not match $-topics
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"#", "$share/g/a", false}, // shared subscriptions neither cover nor are covered
		{"$share/g/#", "a", false},
		{"$share/g/#", "$share/g/a", false},
	} {
		if got := filterCovers(tc.a, tc.b); got != tc.want {
			t.Errorf("filterCovers(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestOverlapCoveredFilterUnsubscribed: a persistent session that holds a covered filter (made by
// an earlier version, or before its cover was configured) loses it, so the broker stops sending
// its copies, and the cover is subscribed with the highest QoS of the filters it covers.
func TestOverlapCoveredFilterUnsubscribed(t *testing.T) {
	b := startMochi(t)
	dir := t.TempDir()
	cfg := testConfig(b.url(),
		Subscription{Topic: "ov/#", QoS: new(0), Format: FormatValue},
		Subscription{Topic: "ov/+", QoS: new(1), Format: FormatValue})
	cfg.ClientID = "overlap-upgrade"
	// What an earlier version left: both filters subscribed in the session, and recorded.
	old := paho.NewClient(paho.NewClientOptions().AddBroker(b.url()).SetClientID(cfg.ClientID).SetCleanSession(false))
	if tok := old.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	if tok := old.SubscribeMultiple(map[string]byte{"ov/#": 0, "ov/+": 1}, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	old.Disconnect(100)
	stateDir := filepath.Join(dir, "mqtt-"+fileSafe(cfg.ClientID))
	if err := saveState(stateDir, subState{ClientID: cfg.ClientID, Topics: map[string]byte{"ov/#": 0, "ov/+": 1}}); err != nil {
		t.Fatal(err)
	}
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", DataDir: dir}, &memEmitter{})
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
	if got := b.subscriptions(cfg.ClientID); !slices.Equal(got, []string{"ov/#"}) {
		t.Fatalf("broker subscriptions %v, want [ov/#]", got)
	}
	cl, _ := b.srv.Clients.Get(cfg.ClientID)
	if sub, _ := cl.State.Subscriptions.Get("ov/#"); sub.Qos != 1 {
		t.Errorf("ov/# subscribed at QoS %d, want 1 (the highest of the filters it covers)", sub.Qos)
	}
	if saved, err := loadState(stateDir); err != nil || !maps.Equal(saved.Topics, map[string]byte{"ov/#": 1}) {
		t.Errorf("saved state %v (%v), want ov/# at QoS 1", saved.Topics, err)
	}
}

func TestFiltersIntersect(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"a/#", "a/+/t", true}, {"a/#", "a", true}, {"a", "a/#", true}, {"+/b", "a/+", true},
		{"a/+", "b/+", false}, {"a/+", "a/b/c", false}, {"a/b", "a/b/c", false}, {"#", "x", true},
		{"#", "$SYS/x", false}, {"+/x", "$SYS/x", false}, {"$SYS/#", "$SYS/+", true}, {"a/+/#", "a/b", true},
		{"a/+/c", "a/b/#", true}, {"a/+/c", "a/b/d", false},
	} {
		if got := filtersIntersect(tc.a, tc.b); got != tc.want {
			t.Errorf("filtersIntersect(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := filtersIntersect(tc.b, tc.a); got != tc.want {
			t.Errorf("filtersIntersect(%q, %q) = %v, want %v", tc.b, tc.a, got, tc.want)
		}
	}
}
