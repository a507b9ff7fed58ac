package main

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gemba-io/gemba/hub/ingest/commerce"
)

// createAgentStream creates the agents' stream as gemba-agent's uplink does with create_stream
// (uplink.createStream: its subjects, limits retention, file storage, a 20-minute duplicate window).
func createAgentStream(t testing.TB, url string, replicas int) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "GEMBA", Subjects: []string{"gemba.*.*.samples", "gemba.*.*.features", "gemba.*.*.status"},
		Retention: jetstream.LimitsPolicy, MaxAge: 7 * 24 * time.Hour, MaxBytes: -1, Replicas: replicas,
		Duplicates: 20 * time.Minute, Storage: jetstream.FileStorage, Discard: jetstream.DiscardNew})
	if err != nil {
		t.Fatal(err)
	}
}

// publishSales creates the COMMERCE stream for channels, as the hub's commerce config would, and
// publishes evs through the hub's publisher, failing the test on any event refused.
func publishSales(t testing.TB, js jetstream.JetStream, channels []string, evs []commerce.Event) {
	t.Helper()
	ctx := context.Background()
	ccfg := commerce.DefaultConfig()
	ccfg.Channels = channels
	if _, err := commerce.EnsureStream(ctx, js, ccfg); err != nil {
		t.Fatal(err)
	}
	pub, err := commerce.NewPublisher(js, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range pub.Publish(ctx, evs) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
}
