package sim

import (
	"errors"
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
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	broker, err := StartBroker(fmt.Sprintf("127.0.0.1:%d", port), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	url := fmt.Sprintf("tcp://127.0.0.1:%d", port)

	var mu sync.Mutex
	var seen []string // "NBIRTH 17", "NDEATH 17", in arrival order
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("bdseq-test-sub"))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(0)
	tok := sub.Subscribe("spBv1.0/plant1/+/edge1", 1, func(_ paho.Client, m paho.Message) {
		var p sparkplug.Payload
		if proto.Unmarshal(m.Payload(), &p) != nil {
			return
		}
		for _, mt := range p.Metrics {
			if mt.GetName() == "bdSeq" {
				mu.Lock()
				seen = append(seen, fmt.Sprintf("%s %d", m.Topic()[len("spBv1.0/plant1/"):len("spBv1.0/plant1/")+6], mt.GetLongValue()))
				mu.Unlock()
			}
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

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
		cl.Stop(errors.New("kicked by the test")) // not a clean disconnect: the broker sends the will
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
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	broker, err := StartBroker(fmt.Sprintf("127.0.0.1:%d", port), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	hook := &dropFirstBirth{dropped: make(chan struct{})}
	if err := broker.AddHook(hook, nil); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("tcp://127.0.0.1:%d", port)

	var mu sync.Mutex
	var seen []string // "NBIRTH 17", "NDEATH 17", in arrival order
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("bdseq-cut-sub"))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(0)
	tok := sub.Subscribe("spBv1.0/plant1/+/edge1", 1, func(_ paho.Client, m paho.Message) {
		var p sparkplug.Payload
		if proto.Unmarshal(m.Payload(), &p) != nil {
			return
		}
		typ := strings.Split(m.Topic(), "/")[2]
		for _, mt := range p.Metrics {
			if mt.GetName() == "bdSeq" {
				mu.Lock()
				seen = append(seen, fmt.Sprintf("%s %d", typ, mt.GetLongValue()))
				mu.Unlock()
			}
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

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
	cl.Stop(errors.New("cut by the test")) // the broker sends the will
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
