package sim

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/gemba-io/gemba/internal/testutil"
)

// A broker that is not there is named with the reason: the error must not read "<nil>".
func TestNewNamesAMissingBroker(t *testing.T) {
	url := fmt.Sprintf("tcp://127.0.0.1:%d", testutil.FreePort(t)) // nothing listens there
	s, err := New(Options{Plant: Config{Seed: 1}, Broker: url})
	if err == nil {
		s.Close()
		t.Fatal("New with no broker listening: no error")
	}
	if !strings.Contains(err.Error(), url) || strings.Contains(err.Error(), "<nil>") || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("error %q: want the broker's URL and why it failed", err)
	}
}

// An OPC UA address already in use is refused with the address.
func TestNewNamesATakenOPCUAPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	s, err := New(Options{Plant: Config{Seed: 1}, OPCUA: addr})
	if err == nil {
		s.Close()
		t.Fatal("New on a taken OPC UA port: no error")
	}
	if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("error %q: want the address and that it is in use", err)
	}
}

// A plant New cannot build is an error, not a panic: negative extra signals, or so many that the
// Sparkplug aliases of two machines collide.
func TestNewRefusesBadExtraSignals(t *testing.T) {
	for _, n := range []int{-3, -10, aliasStride} {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("ExtraSignals %d: panic: %v", n, r)
				}
			}()
			s, err := New(Options{Plant: Config{Seed: 1, ExtraSignals: n}})
			if err == nil {
				s.Close()
				t.Errorf("ExtraSignals %d: no error", n)
			} else if !strings.Contains(err.Error(), "extra signals") {
				t.Errorf("ExtraSignals %d: error %q does not name extra signals", n, err)
			}
		}()
	}
}

// The OPC UA server stamps the values it starts with by the simulator's Clock too, at start and at
// a restart: a value that does not change keeps that stamp, and with a clock of its own (a test's)
// the wall time would put it out of order with every later value.
func TestOPCUAStartStampsByTheClock(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := base
	s, err := New(Options{Plant: Config{Seed: 1}, OPCUA: addr, Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stamp := func() time.Time {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := opcua.NewClient(s.OPCUAEndpoint(), opcua.SecurityMode(ua.MessageSecurityModeNone))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		ns, err := c.FindNamespace(ctx, NamespaceURI)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: ua.NewStringNodeID(ns, "line1.press.sku"), AttributeID: ua.AttributeIDValue}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Results[0].SourceTimestamp
	}
	if got := stamp(); !got.Equal(base) {
		t.Fatalf("at start line1.press.sku is stamped %s, want the clock's %s", got, base)
	}
	now = base.Add(time.Minute)
	s.StopOPCUA()
	if err := s.StartOPCUA(); err != nil {
		t.Fatal(err)
	}
	if got := stamp(); !got.Equal(now) {
		t.Fatalf("after a restart line1.press.sku is stamped %s, want the clock's %s", got, now)
	}
}
