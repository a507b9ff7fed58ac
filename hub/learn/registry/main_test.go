package registry

import (
	"testing"

	"go.uber.org/goleak"
)

// nats.go v1.55 leaks one goroutine per object store Put: Put publishes through a private JetStream
// context whose async-reply setup starts resetPendingAcksOnReconnect, then its deferred
// cleanupReplySub sets the status channel to nil; a goroutine that reads the field after that blocks
// on a nil channel for good (jetstream/publish.go:566-570, object.go:693). One per stored set. Fixed
// in nats.go v1.56.0 (the channel is passed to the goroutine): drop this ignore after upgrading.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"))
}
