package mqtt

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/internal/testutil"
)

// mqttPacket frames an MQTT 3.1.1 control packet: first byte, remaining length, body.
func mqttPacket(first byte, body []byte) []byte {
	out := []byte{first}
	for n := len(body); ; {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

func mqttString(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

// TestHugePayloadIsNotRead: max_payload bounds what the collector takes in, not only what it
// parses. A payload of 16 MiB (a broker without a size limit passes up to 256 MiB) is cut at the
// connection: counted too_large without the agent allocating it (paho would allocate it twice).
func TestHugePayloadIsNotRead(t *testing.T) {
	mq := startMosquittoConf(t, "")
	cfg := testConfig(mq.url(), Subscription{Topic: "big/#", Format: FormatValue})
	cfg.ClientID = "huge-test"
	cfg.MaxPayload = 1 << 10
	reg := prometheus.NewRegistry()
	em := &memEmitter{}
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", Metrics: reg}, em)
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))

	// A raw publisher, so that the test process allocates the payload once, before measuring.
	const size = 16 << 20
	connect := append(mqttString("MQTT"), 4, 0x02, 0, 60)
	connect = append(connect, mqttString("huge-pub")...)
	body := append(mqttString("big/x"), make([]byte, size)...)
	for i := 2 + len("big/x"); i < len(body); i++ {
		body[i] = '7'
	}
	stream := append(mqttPacket(0x10, connect), mqttPacket(0x30, body)...) // CONNECT, PUBLISH QoS 0
	stream = append(stream, mqttPacket(0x30, append(mqttString("big/y"), "42"...))...)
	conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(mq.port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := conn.Write(stream); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the small message after the huge one", func() bool { return em.count() == 1 })
	runtime.ReadMemStats(&after)
	labels := map[string]string{"reason": reasonTooLarge}
	if v := counterValue(t, reg, "gemba_mqtt_bad_payloads_total", labels); v != 1 {
		t.Errorf("too_large = %v, want 1", v)
	}
	if got := render(withRecvTime(em.all())); got != "big.y=int/42" {
		t.Errorf("samples = %s", got)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/4 {
		t.Errorf("the collector allocated %d MiB for a %d MiB payload over max_payload %s", alloc>>20, size>>20, cfg.MaxPayload)
	}
}

// TestPubCutterStream: paho reads every packet of the rewritten stream intact, PUBLISH payloads
// beyond the limit cut to limit+1 bytes (topic and packet id kept), the rest as sent.
func TestPubCutterStream(t *testing.T) {
	const limit = 8
	pub := func(qos byte, topic string, payload string) []byte {
		body := mqttString(topic)
		if qos > 0 {
			body = append(body, 0x12, 0x34)
		}
		return mqttPacket(0x30|qos<<1, append(body, payload...))
	}
	long := strings.Repeat("p", 200) // a two-byte remaining length
	var stream []byte
	stream = append(stream, pub(1, "a/b", "12345678")...)  // exactly the limit
	stream = append(stream, pub(1, "a/b", "123456789")...) // limit+1: as is
	stream = append(stream, pub(1, "a/b", long)...)
	stream = append(stream, mqttPacket(0x90, []byte{0x12, 0x34, 0x01})...) // SUBACK
	stream = append(stream, pub(0, "t", long)...)
	stream = append(stream, pub(2, strings.Repeat("t", 300), "x")...) // long topic, short payload
	stream = append(stream, mqttPacket(0xd0, nil)...)                 // PINGRESP
	r := &pubCutter{r: bufio.NewReaderSize(bytes.NewReader(stream), 16), limit: limit}
	var got []string
	for {
		cp, err := packets.ReadPacket(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		switch p := cp.(type) {
		case *packets.PublishPacket:
			got = append(got, fmt.Sprintf("%s/q%d/%x:%d", p.TopicName[:1], p.Qos, p.MessageID, len(p.Payload)))
		default:
			got = append(got, cp.String()[:6])
		}
	}
	want := "[a/q1/1234:8 a/q1/1234:9 a/q1/1234:9 SUBACK t/q0/0:9 t/q2/1234:1 PINGRE]"
	if fmt.Sprint(got) != want {
		t.Fatalf("packets = %v\nwant %s", got, want)
	}
}
