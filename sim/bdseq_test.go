package sim

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"google.golang.org/protobuf/proto"

	"github.com/gemba-io/gemba/collectors/mqtt/sparkplug"
	"github.com/gemba-io/gemba/internal/testutil"
)

// Sparkplug B: every MQTT connect of the edge node is a new session with the next bdSeq, in its will
// (NDEATH) and in the NBIRTH that follows. With one bdSeq for the whole run, a host cannot tell the
// will of an earlier session from the death of the current one.
func TestEveryReconnectIsANewBdSeq(t *testing.T) {
	broker, url := bdSeqBroker(t)
	var mu sync.Mutex
	var seen []string // "NBIRTH 17", "NDEATH 17", in arrival order
	watchBdSeq(t, url, "bdseq-test-sub", &mu, &seen)

	s, err := New(Options{Plant: Config{Seed: 1}, Broker: url, ClientID: "bdseq-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	// stepUntil steps the plant (a birth goes out at the step after a connect) until n messages
	// carried a bdSeq.
	stepUntil := func(n int, what string) {
		testutil.WaitFor(t, 20*time.Second, what, func() bool {
			s.Step()
			return count() >= n
		})
	}
	kick := func() {
		cl, ok := broker.Clients.Get("gemba-sim-plant1-edge1")
		if !ok {
			t.Fatal("edge node not connected")
		}
		// Nothing in flight, so that the messages this test counts are this session's.
		testutil.WaitFor(t, 10*time.Second, "every publish acknowledged", s.ack.settled)
		// The connection cut under the broker: its read fails, so it sends the will. (Stop may let the
		// read loop end as a clean close, without the will.)
		_ = cl.Net.Conn.Close()
	}
	stepUntil(1, "the first NBIRTH")
	kick()
	stepUntil(3, "the NDEATH and the NBIRTH of the next session")
	kick()
	stepUntil(5, "the second NDEATH and the third NBIRTH")
	mu.Lock()
	defer mu.Unlock()
	var bd [3]string
	fmt.Sscanf(seen[0], "NBIRTH %s", &bd[0])
	fmt.Sscanf(seen[2], "NBIRTH %s", &bd[1])
	fmt.Sscanf(seen[4], "NBIRTH %s", &bd[2])
	want := []string{"NBIRTH " + bd[0], "NDEATH " + bd[0], "NBIRTH " + bd[1], "NDEATH " + bd[1], "NBIRTH " + bd[2]}
	if fmt.Sprint(seen[:5]) != fmt.Sprint(want) || bd[0] == bd[1] || bd[1] == bd[2] {
		t.Fatalf("bdSeq by message %v: want each NDEATH to carry its session's NBIRTH bdSeq and each session a new one", seen)
	}
}

// dropFirstBirth drops the edge node's first NBIRTH without acknowledging it, and says so: the
// client still holds the birth as unacknowledged when the test cuts its connection.
type dropFirstBirth struct {
	mqtt.HookBase
	done    atomic.Bool
	dropped chan struct{}
}

func (h *dropFirstBirth) ID() string { return "drop-first-birth" }

func (h *dropFirstBirth) Provides(b byte) bool { return b == mqtt.OnPublish }

func (h *dropFirstBirth) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if strings.Contains(pk.TopicName, "/NBIRTH/") && h.done.CompareAndSwap(false, true) {
		close(h.dropped)
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// A birth the broker never acknowledged belongs to a session that is dead once its NDEATH went
// out: it must not arrive after that NDEATH (paho resends unacknowledged QoS 1 publishes when it
// reconnects; Sparkplug sends births at QoS 0).
func TestDeadSessionsBirthNeverFollowsItsDeath(t *testing.T) {
	broker, url := bdSeqBroker(t)
	hook := &dropFirstBirth{dropped: make(chan struct{})}
	if err := broker.AddHook(hook, nil); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string // "NBIRTH 17", "NDEATH 17", in arrival order
	watchBdSeq(t, url, "bdseq-cut-sub", &mu, &seen)

	s, err := New(Options{Plant: Config{Seed: 1}, Broker: url, ClientID: "bdseq-cut"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	testutil.WaitFor(t, 20*time.Second, "the first NBIRTH at the broker", func() bool {
		s.Step()
		select {
		case <-hook.dropped:
			return true
		default:
			return false
		}
	})
	cl, ok := broker.Clients.Get("gemba-sim-plant1-edge1")
	if !ok {
		t.Fatal("edge node not connected")
	}
	testutil.WaitFor(t, 10*time.Second, "every publish acknowledged", s.ack.settled) // see kick above
	_ = cl.Net.Conn.Close()                                                          // the connection cut under the broker: it sends the will
	// A resent old birth would come first after the reconnect, before the new session's own.
	bornAgain := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i, m := range seen {
			if strings.HasPrefix(m, "NDEATH") {
				return i+1 < len(seen)
			}
		}
		return false
	}
	testutil.WaitFor(t, 20*time.Second, "the NDEATH and a birth after it", func() bool {
		s.Step()
		return bornAgain()
	})
	mu.Lock()
	defer mu.Unlock()
	dead := map[string]bool{}
	for _, m := range seen {
		typ, bd, _ := strings.Cut(m, " ")
		if typ == "NDEATH" {
			dead[bd] = true
		} else if dead[bd] {
			t.Fatalf("messages %v: a birth of session %s arrived after its NDEATH", seen, bd)
		}
	}
}

// bdSeqBroker starts a broker for the edge node until the test ends.
func bdSeqBroker(t *testing.T) (*mqtt.Server, string) {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	broker, err := StartBroker(fmt.Sprintf("127.0.0.1:%d", port), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = broker.Close() })
	return broker, fmt.Sprintf("tcp://127.0.0.1:%d", port)
}

// watchBdSeq subscribes to edge1's node messages and appends "<type> <bdSeq>" to *seen for each
// that carries a bdSeq, in arrival order, until the test ends.
func watchBdSeq(t *testing.T, url, id string, mu *sync.Mutex, seen *[]string) {
	t.Helper()
	// No reconnect: a lost connection loses messages (the test then fails on what it saw), and a
	// reconnect in progress at the end outlives the test.
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(false))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { sub.Disconnect(0) })
	tok := sub.Subscribe("spBv1.0/plant1/+/edge1", 1, func(_ paho.Client, m paho.Message) {
		var p sparkplug.Payload
		if proto.Unmarshal(m.Payload(), &p) != nil {
			return
		}
		typ := strings.Split(m.Topic(), "/")[2]
		for _, mt := range p.Metrics {
			if mt.GetName() == "bdSeq" {
				mu.Lock()
				*seen = append(*seen, fmt.Sprintf("%s %d", typ, mt.GetLongValue()))
				mu.Unlock()
			}
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
}
