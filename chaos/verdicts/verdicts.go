// Package verdicts reads the guard's stored verdicts straight from its bucket, as an outside checker
// would: the chaos hub scenarios and gemba-hub's replica test judge every other store against them.
package verdicts

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the guard's bucket (guard's default config); the decision records are its dec.<id> keys.
const Bucket = "GEMBA_GUARD"

// Allowed is the set of decision ids whose stored verdict is allow. It decodes the record itself
// rather than through the guard's types, so that a checker does not share the code it checks. A key
// that vanishes between the listing and the read is skipped: it holds no verdict to count.
func Allowed(ctx context.Context, js jetstream.JetStream) (map[string]bool, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", Bucket, err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: list keys: %w", Bucket, err)
	}
	out := map[string]bool{}
	for k := range keys.Keys() {
		id, ok := strings.CutPrefix(k, "dec.")
		if !ok {
			continue
		}
		ent, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var rec struct {
			Verdict *struct {
				Outcome string `json:"outcome"`
			} `json:"verdict"`
		}
		if json.Unmarshal(ent.Value(), &rec) == nil && rec.Verdict != nil && rec.Verdict.Outcome == "allow" {
			out[id] = true
		}
	}
	return out, nil
}
