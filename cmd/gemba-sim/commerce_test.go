package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// With -commerce-nats the simulator publishes the plant's sales and counts to the hub's COMMERCE
// stream, beside the plant, and says what it did when it stops.
func TestCommerceSimulatorPublishes(t *testing.T) {
	s := natstest.JetStream(t)
	_, js := natstest.Connect(t, s.URL())
	cfg := commerce.DefaultConfig()
	cfg.Channels = []string{"web", "retail", "wholesale"}
	st, err := commerce.EnsureStream(context.Background(), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	args := []string{"-opcua", "", "-listen-mqtt", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), "-tick", "50ms",
		"-speed", "12000", "-duration", "3s", "-commerce-nats", s.URL(), "-commerce-scale", "0.05"}
	if err := run(args, &out, &errb); err != nil {
		t.Fatal(err, errb.String())
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// 3 s of 50 ms ticks of 10 simulated minutes: about 10 simulated hours, so counts at 0h and 6h.
	inv, err := st.Info(context.Background(), jetstream.WithSubjectFilter(commerce.InventorySubject("gemba")))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs < 20 || inv.State.Subjects[commerce.InventorySubject("gemba")] < 6 {
		t.Fatalf("stream holds %d messages, %v inventory rows: want sales and counts\n%s", info.State.Msgs, inv.State.Subjects, out.String())
	}
	if !strings.Contains(out.String(), "  commerce "+s.URL()) || !strings.Contains(out.String(), "count rows acknowledged, 0 not") {
		t.Fatalf("output:\n%s", out.String())
	}
}

func TestCommerceBadFlags(t *testing.T) {
	var out, errb bytes.Buffer
	err := run([]string{"-opcua", "", "-listen-mqtt", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), "-commerce-nats", "nats://127.0.0.1:1",
		"-commerce-channels", "web,shop"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), `channels[1]: "shop"`) {
		t.Fatalf("err = %v", err)
	}
}
