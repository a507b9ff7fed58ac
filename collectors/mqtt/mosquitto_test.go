package mqtt

import (
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/internal/testutil"
)

// ackedPublisher publishes {"n": i} for i in [0, n) at QoS 1, retrying until the broker acks
// each one, and records which ones were PUBACKed.
type ackedPublisher struct {
	mu      sync.Mutex
	acked   map[int]bool
	retried map[int]bool // published more than once: the broker may hold two copies
	done    chan struct{}
}

func startAckedPublisher(t *testing.T, cl paho.Client, topic string, n int) *ackedPublisher {
	p := &ackedPublisher{acked: map[int]bool{}, retried: map[int]bool{}, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for i := 0; i < n; i++ {
			for attempt := 0; ; attempt++ {
				if attempt == 200 {
					t.Errorf("message %d never acknowledged by the broker", i)
					return
				}
				if attempt > 0 {
					p.mu.Lock()
					p.retried[i] = true
					p.mu.Unlock()
				}
				tok := cl.Publish(topic, 1, false, fmt.Appendf(nil, `{"n":%d}`, i))
				if tok.WaitTimeout(2*time.Second) && tok.Error() == nil {
					p.mu.Lock()
					p.acked[i] = true
					p.mu.Unlock()
					break
				}
				time.Sleep(20 * time.Millisecond) // broker down: retry pacing, not synchronisation
			}
		}
	}()
	return p
}

func (p *ackedPublisher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

func (p *ackedPublisher) wait(t *testing.T) {
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatal("publisher did not finish")
	}
}

// missing returns acked message numbers not in got.
func (p *ackedPublisher) missing(got map[int]int) []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int
	for i := range p.acked {
		if got[i] == 0 {
			out = append(out, i)
		}
	}
	return out
}

// TestMosquittoBrokerKilled: SIGKILL mosquitto mid-stream and restart it on the same port and
// store. Every message the broker acknowledged arrives, and the subscription works afterwards.
func TestMosquittoBrokerKilled(t *testing.T) {
	mq := startMosquitto(t, "")
	cfg := testConfig(mq.url(), Subscription{Topic: "kill/#", Format: FormatJSON, Fields: []Field{{Path: "n"}}})
	cfg.ClientID = "broker-kill-test"
	em := &memEmitter{}
	reg := prometheus.NewRegistry()
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", DataDir: t.TempDir(), Metrics: reg}, em)
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))

	const n = 600
	pub := newPublisher(t, mq.url(), "broker-kill-pub")
	p := startAckedPublisher(t, pub, "kill/m", n)
	testutil.WaitFor(t, 20*time.Second, "200 messages acknowledged", func() bool { return p.count() >= 200 })
	mq.kill()
	mq.start()
	p.wait(t)
	got := func() map[int]int {
		m := map[int]int{}
		for _, s := range em.all() {
			if i, ok := s.Value.Int(); ok {
				m[int(i)]++
			}
		}
		return m
	}
	testutil.WaitFor(t, 30*time.Second, "every acknowledged message", func() bool { return len(p.missing(got())) == 0 })
	if v := counterValue(t, reg, "gemba_mqtt_connects_total", nil); v < 2 {
		t.Errorf("connects_total = %v, want a reconnect", v)
	}
	t.Logf("received %d distinct of %d published, %d samples (duplicates are redeliveries)", len(got()), n, em.count())
}

// TestMosquittoAgentKilled: the collector runs in a child process with a durable file emitter and
// is SIGKILLed while the publisher keeps sending at QoS 1, then restarted with the same client id.
// Every message the publisher got a PUBACK for must be in the file: the broker redelivers what the
// dead collector had not acknowledged, and nothing was acknowledged before it was durable. And none
// twice: what was durable but not acknowledged comes back as a DUP the journal recognises
// (TestCrashAfterDurableStoresOnce kills at exactly that point).
func TestMosquittoAgentKilled(t *testing.T) {
	mq := startMosquitto(t, "")
	dir := t.TempDir()
	out := filepath.Join(dir, "samples.jsonl")
	child := startChild(t, mq.url(), out, filepath.Join(dir, "state"), "agentkill/#")

	const n = 1500
	pub := newPublisher(t, mq.url(), "agent-kill-pub")
	p := startAckedPublisher(t, pub, "agentkill/m", n)
	testutil.WaitFor(t, 20*time.Second, "some messages through the collector", func() bool { return len(readRecords(t, out)) >= 300 })
	child.kill()
	before := len(readRecords(t, out))
	testutil.WaitFor(t, 20*time.Second, "publisher to go on while the collector is dead", func() bool { return p.count() >= before+200 })
	startChild(t, mq.url(), out, filepath.Join(dir, "state"), "agentkill/#")
	p.wait(t)
	got := func() map[int]int {
		m := map[int]int{}
		for _, r := range readRecords(t, out) {
			if i, err := strconv.Atoi(r.Value); err == nil {
				m[i]++
			}
		}
		return m
	}
	testutil.WaitFor(t, 30*time.Second, "every acknowledged message in the durable file", func() bool { return len(p.missing(got())) == 0 })
	dups := 0
	p.mu.Lock()
	for i, k := range got() {
		if !p.retried[i] {
			dups += k - 1
		}
	}
	p.mu.Unlock()
	t.Logf("killed after %d durable samples; %d published, %d distinct received, %d duplicates", before, n, len(got()), dups)
	if dups > 0 {
		t.Errorf("%d messages stored twice across the crash", dups)
	}
}

// TestMosquittoTopicsAcrossRestart: a filter removed from the config while the collector was down is
// unsubscribed at the broker (persistent session), a new one is subscribed. Checked through the
// broker's behaviour: a message on the removed topic is not delivered, one on the new topic is.
func TestMosquittoTopicsAcrossRestart(t *testing.T) {
	mq := startMosquitto(t, "")
	dir := t.TempDir()
	run := func(topics ...string) (*Collector, *memEmitter, *prometheus.Registry, func()) {
		var subs []Subscription
		for _, tp := range topics {
			subs = append(subs, Subscription{Topic: tp, Format: FormatValue})
		}
		cfg := testConfig(mq.url(), subs...)
		cfg.ClientID = "topics-test"
		em := &memEmitter{}
		reg := prometheus.NewRegistry()
		c, stop := startCollector(t, cfg, collectors.Deps{Agent: "a", DataDir: dir, Metrics: reg}, em)
		testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
		return c, em, reg, stop
	}
	_, _, _, stop := run("old/x", "keep/x")
	stop()
	pub := newPublisher(t, mq.url(), "topics-pub")
	// Queued for the offline session while both filters are still subscribed.
	publish(t, pub, "keep/x", 1, []byte("1"))
	_, em, reg, stop := run("keep/x", "new/x")
	defer stop()
	testutil.WaitFor(t, 10*time.Second, "queued message", func() bool { return em.count() == 1 })
	publish(t, pub, "old/x", 1, []byte("2"))
	publish(t, pub, "new/x", 1, []byte("3"))
	publish(t, pub, "keep/x", 1, []byte("4")) // sentinel: mosquitto delivers one publisher's messages in order
	testutil.WaitFor(t, 10*time.Second, "new and sentinel messages", func() bool { return em.count() >= 3 })
	var names []string
	for _, s := range em.all() {
		names = append(names, s.Signal+"="+s.Value.Text())
	}
	if want := "[keep.x=1 new.x=3 keep.x=4]"; fmt.Sprint(names) != want {
		t.Errorf("samples = %v, want %s", names, want)
	}
	if v := counterValue(t, reg, "gemba_mqtt_unmatched_messages_total", nil); v != 0 {
		t.Errorf("unmatched messages = %v: the removed filter is still subscribed", v)
	}
}

// TestMosquittoRestartWithoutPersistence: mosquitto comes back with no memory of the session, so
// only the collector's own re-subscribe in OnConnect makes messages flow again.
func TestMosquittoRestartWithoutPersistence(t *testing.T) {
	mq := startMosquittoConf(t, "")
	cfg := testConfig(mq.url(), Subscription{Topic: "fresh/#", Format: FormatValue})
	em := &memEmitter{}
	reg := prometheus.NewRegistry()
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", DataDir: t.TempDir(), Metrics: reg}, em)
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
	mq.kill()
	mq.start()
	testutil.WaitFor(t, 15*time.Second, "reconnected and re-subscribed", func() bool {
		return counterValue(t, reg, "gemba_mqtt_connects_total", nil) >= 2 && connectedState(c)()
	})
	pub := newPublisher(t, mq.url(), "fresh-pub")
	publish(t, pub, "fresh/1", 1, []byte("11"))
	testutil.WaitFor(t, 5*time.Second, "message after a broker that forgot the session", func() bool { return em.count() == 1 })
}
