package chaos

import (
	"context"
	"testing"
	"time"

	"github.com/gemba-io/gemba/internal/testutil"
)

// TestHubChaosShort runs every hub scenario in its short form: gemba-hub processes (the built
// binary) deciding on a feature load while replicas are SIGKILLed, a NATS node of a cluster
// restarts, the webhook endpoint is down, an agent replays a historical backlog and the rules are
// rolled back. Any decision lost, acted twice, acted beyond a guardrail or on historical data fails it.
func TestHubChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("runs five hub scenarios with real processes (~90 s)")
	}
	bin, err := BuildHub(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	o := HubShort(t.TempDir(), bin, testutil.Writer(t))
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	for _, sc := range HubScenarios(o) {
		t.Run(sc.Name, func(t *testing.T) {
			o.Log = testutil.Writer(t)
			r := RunHub(ctx, o, sc)
			t.Log(r.Line())
			if !r.Pass() {
				t.Error(r.Line())
			}
		})
	}
}
