package sim

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
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
