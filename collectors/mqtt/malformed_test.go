package mqtt

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/internal/testutil"
	"github.com/gemba-io/gemba/signal"
)

// TestMalformedPayloads sends bad payloads through a real broker: each is counted with its
// reason, acknowledged (not redelivered forever), and the collector keeps going.
func TestMalformedPayloads(t *testing.T) {
	b := startMochi(t)
	cfg := testConfig(b.url(),
		Subscription{Topic: "j/#", Format: FormatJSON, Fields: []Field{{Path: "a", Type: "float"}, {Path: "b"}}},
		Subscription{Topic: "v/#", Format: FormatValue},
		Subscription{Topic: "spBv1.0/g/#", Format: FormatSparkplugB},
	)
	cfg.ClientID = "malformed-test"
	em := &memEmitter{}
	reg := prometheus.NewRegistry()
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", Metrics: reg}, em)
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
	pub := newPublisher(t, b.url(), "pub")

	huge := append([]byte(`{"a":1,"pad":"`), bytes.Repeat([]byte("x"), 10<<20)...)
	huge = append(huge, `"}`...)
	cases := []struct {
		name, topic string
		payload     []byte
		sub, reason string
		samples     string // what is still emitted
	}{
		{"truncated JSON", "j/1", []byte(`{"a":1,"b":`), "j/#", reasonInvalidJSON, ""},
		{"wrong types keep the parsable field", "j/1", []byte(`{"a":"hot","b":2}`), "j/#", reasonWrongType, `j.1.a=none/!bad(a: "hot" is not a number) j.1.b=int/2`},
		{"10 MB payload", "j/1", huge, "j/#", reasonTooLarge, ""},
		{"invalid UTF-8 JSON", "j/1", []byte("{\"a\":1,\"b\":\"\xc3\x28\"}"), "j/#", reasonInvalidUTF8, ""},
		{"missing field", "j/1", []byte(`{"a":1}`), "j/#", reasonMissingField, "j.1.a=float/1"},
		{"invalid UTF-8 value", "v/1", []byte("\xff"), "v/#", reasonInvalidUTF8, ""},
		{"empty value", "v/1", nil, "v/#", reasonEmpty, ""},
		{"protobuf garbage", "spBv1.0/g/NDATA/n", []byte{0x0a, 0xff, 0xff, 0x01, 0x02}, "spBv1.0/g/#", reasonProtobuf, ""},
		{"sparkplug topic without node", "spBv1.0/g/NDATA", []byte{}, "spBv1.0/g/#", reasonSpTopic, ""},
	}
	inflight := func() int {
		cl, ok := b.srv.Clients.Get("malformed-test")
		if !ok {
			return -1
		}
		return cl.State.Inflight.Len()
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			labels := map[string]string{"subscription": tc.sub, "reason": tc.reason}
			before := counterValue(t, reg, "gemba_mqtt_bad_payloads_total", labels)
			n := em.count()
			publish(t, pub, tc.topic, 1, tc.payload)
			testutil.WaitFor(t, 10*time.Second, "bad payload counted", func() bool {
				return counterValue(t, reg, "gemba_mqtt_bad_payloads_total", labels) == before+1
			})
			testutil.WaitFor(t, 5*time.Second, "message acknowledged", func() bool { return inflight() == 0 })
			got := em.all()[n:]
			if r := render(withRecvTime(got)); r != tc.samples {
				t.Errorf("samples kept = %s, want %s", r, tc.samples)
			}
		})
	}
	// Still alive: a good message goes through.
	n := em.count()
	publish(t, pub, "v/ok", 1, []byte("1"))
	testutil.WaitFor(t, 5*time.Second, "good message after bad ones", func() bool { return em.count() == n+1 })
}

// withRecvTime normalises receive times for render.
func withRecvTime(ss []signal.Sample) []signal.Sample {
	out := make([]signal.Sample, len(ss))
	for i, s := range ss {
		s.Time = recvTime
		out[i] = s
	}
	return out
}

// TestBadPayloadLogIsRateLimited: a sensor spamming garbage is counted every time but logged
// once per interval, with the topic and the reason.
func TestBadPayloadLogIsRateLimited(t *testing.T) {
	b := startMochi(t)
	cfg := testConfig(b.url(), Subscription{Topic: "spam/#", Format: FormatJSON})
	var logs testutil.Buffer
	reg := prometheus.NewRegistry()
	c := runCollector(t, cfg, collectors.Deps{Agent: "a", Metrics: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, &memEmitter{})
	testutil.WaitFor(t, 10*time.Second, "connected", connectedState(c))
	// However slow the machine, all 20 fall in one interval.
	c.warn.SetInterval(time.Hour)
	pub := newPublisher(t, b.url(), "pub")
	for range 20 {
		publish(t, pub, "spam/s1", 1, []byte(`{"broken`))
	}
	labels := map[string]string{"subscription": "spam/#", "reason": reasonInvalidJSON}
	testutil.WaitFor(t, 10*time.Second, "20 bad payloads counted", func() bool {
		return counterValue(t, reg, "gemba_mqtt_bad_payloads_total", labels) == 20
	})
	out := logs.String()
	if n := strings.Count(out, `msg="bad payload"`); n != 1 {
		t.Fatalf("%d bad payload log lines, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "topic=spam/s1") || !strings.Contains(out, "reason=invalid_json") {
		t.Fatalf("log line lacks topic or reason: %s", out)
	}
}
