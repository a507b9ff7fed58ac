package verdicts

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/internal/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Only decision records whose verdict is allow count: not other verdicts, records without one,
// garbage, or the guard's other keys.
func TestAllowed(t *testing.T) {
	_, js := natstest.Connect(t, natstest.JetStream(t).URL())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := Allowed(ctx, js); err == nil || !strings.Contains(err.Error(), Bucket) {
		t.Fatalf("no bucket: err %v, want one naming %s", err, Bucket)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"dec.a1":         `{"verdict":{"decision_id":"a1","outcome":"allow"}}`,
		"dec.a2":         `{"proposal":{},"verdict":{"outcome":"allow"}}`,
		"dec.s1":         `{"verdict":{"outcome":"suppress"}}`,
		"dec.claimed":    `{"proposal":{}}`,
		"dec.garbage":    `{"verdict":`,
		"queue.a1":       `{"verdict":{"outcome":"allow"}}`,
		"day.2026-12-05": `{"verdict":{"outcome":"allow"}}`,
		"cool.A-100.web": `{}`,
	} {
		if _, err := kv.PutString(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Allowed(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]bool{"a1": true, "a2": true}; !maps.Equal(got, want) {
		t.Fatalf("allowed %v, want %v", got, want)
	}
}
