package chaos

import (
	"context"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gemba-io/gemba/internal/testutil"
)

func TestMain(m *testing.M) {
	MaybeRunAgent() // the suite re-executes this binary as the agent process
	// gopcua's server leaves goroutines behind after Close when a client was connecting at that
	// moment (channelBroker.RegisterConn blocks on a channel nobody reads any more).
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/gopcua/opcua/server.(*channelBroker).RegisterConn"),
		goleak.IgnoreAnyFunction("github.com/gopcua/opcua/server.(*channelBroker).Close.func1"),
		goleak.IgnoreTopFunction("github.com/gopcua/opcua/server.(*Subscription).run"))
}

// TestChaosShort runs every scenario in its short form against a real agent process, mosquitto, an
// embedded JetStream and the simulator; any acknowledged sample lost or duplicated fails it.
func TestChaosShort(t *testing.T) {
	bin := MosquittoPath()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("mosquitto is not installed (make peers); CI needs it")
		}
		t.Skip("mosquitto is not installed: run `make peers` (apt-get install mosquitto)")
	}
	o := Short(t.TempDir(), bin, testutil.Writer(t))
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	for _, sc := range Scenarios(o) {
		t.Run(sc.Name, func(t *testing.T) {
			o.Log = testutil.Writer(t)
			r := Run(ctx, o, sc)
			t.Log(r.Line())
			if r.Pass() {
				return
			}
			t.Error(r.Err)
		})
	}
}
