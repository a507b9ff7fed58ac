package natstest

import (
	"testing"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Start uses the options it is given (here a password the client must send), fixes the random port,
// and a restart keeps that port; Connect passes the caller's client options on.
func TestStartWithOptions(t *testing.T) {
	o := Options(t)
	o.Username, o.Password = "u", "p"
	n := Start(t, o)
	if n.Opts.Port <= 0 {
		t.Fatalf("port %d after start, want the bound one", n.Opts.Port)
	}
	if nc, err := nats.Connect(n.URL()); err == nil {
		nc.Close()
		t.Fatal("connected without the password: the options were not used")
	}
	nc, _ := Connect(t, n.URL(), nats.UserInfo("u", "p"))
	if !nc.IsConnected() {
		t.Fatal("not connected with the password")
	}
	port := n.Opts.Port
	n.Stop()
	n.Start()
	if n.Opts.Port != port {
		t.Fatalf("restarted on port %d, want %d", n.Opts.Port, port)
	}
	nc2, _ := Connect(t, n.URL(), nats.UserInfo("u", "p"))
	if !nc2.IsConnected() {
		t.Fatal("not connected after the restart")
	}
}
