package sim

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"
)

// NamespaceURI is the OPC UA namespace of the simulator's variables. A node id is
// nsu=urn:gemba:sim;s=<line>.<machine>.<field>, e.g. nsu=urn:gemba:sim;s=line1.press.temperature.
const NamespaceURI = "urn:gemba:sim"

// opcuaServer exposes the OPC UA machines as variables, one folder per machine under Objects (i=85).
// gopcua's server reads values through callbacks; ours read under mu because the plant updates
// them from another goroutine.
type opcuaServer struct {
	srv    *server.Server
	cancel context.CancelFunc
	url    string

	mu   sync.Mutex
	vals map[string]*ua.DataValue
	ids  [][]*ua.NodeID // per OPC UA machine, per point
}

// startOPCUA starts a server on host:port (security None, anonymous) with the current values of the
// machines, each stamped now (the simulator's clock) so that a restarted server never re-serves an
// old timestamp.
func startOPCUA(host string, port int, machines []*Machine, now time.Time, log *slog.Logger) (*opcuaServer, error) {
	srv := server.New(
		server.EndPoint(host, port),
		server.EnableSecurity("None", ua.MessageSecurityModeNone),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		server.SetLogger(log),
	)
	o := &opcuaServer{srv: srv, url: fmt.Sprintf("opc.tcp://%s:%d", host, port), vals: map[string]*ua.DataValue{}}
	ns := server.NewNodeNameSpace(srv, NamespaceURI)
	// The machine folders hang off the standard Objects folder (ns=0;i=85), where every client and
	// `gemba-agent browse` starts, not off the Objects node gopcua makes for each namespace
	// (ns=1;i=85), which nothing references.
	objects := srv.Node(ua.NewNumericNodeID(0, id.ObjectsFolder))
	if objects == nil {
		return nil, fmt.Errorf("opcua server %s: no Objects folder in the standard nodeset", host)
	}
	for _, m := range machines {
		dev := DeviceID(m)
		folder := server.NewFolderNode(ua.NewStringNodeID(ns.ID(), dev), dev)
		ns.AddNode(folder)
		objects.AddRef(folder, server.RefTypeIDOrganizes, true)
		folder.AddRef(objects, server.RefTypeIDOrganizes, false)
		ids := make([]*ua.NodeID, len(m.Points))
		for i := range m.Points {
			name := m.Signal(m.Points[i].Field)
			o.vals[name] = dataValue(&m.Points[i], now)
			n := ns.AddNewVariableStringNode(name, func() *ua.DataValue {
				o.mu.Lock()
				defer o.mu.Unlock()
				return o.vals[name]
			})
			folder.AddRef(n, server.RefTypeIDHasComponent, true)
			ids[i] = n.ID()
		}
		o.ids = append(o.ids, ids)
	}
	ctx, cancel := context.WithCancel(context.Background())
	o.cancel = cancel
	if err := srv.Start(ctx); err != nil {
		cancel()
		return nil, fmt.Errorf("opcua server %s: %w", o.url, err)
	}
	return o, nil
}

func dataValue(p *Point, at time.Time) *ua.DataValue {
	var v any
	switch p.Kind {
	case Float:
		v = p.F
	case Int:
		v = p.I
	default:
		v = p.S
	}
	dv := &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp,
		Value: ua.MustVariant(v), SourceTimestamp: at, ServerTimestamp: at}
	if p.Bad {
		dv.EncodingMask |= ua.DataValueStatusCode
		dv.Status = ua.StatusBadSensorFailure
	}
	return dv
}

// update publishes the machines' current values (all changed values, stamped at) and notifies
// monitored items; it returns how many values changed.
func (o *opcuaServer) update(machines []*Machine, at time.Time) int {
	var changed []*ua.NodeID
	o.mu.Lock()
	for k, m := range machines {
		for i := range m.Points {
			name := m.Signal(m.Points[i].Field)
			dv := dataValue(&m.Points[i], at)
			old := o.vals[name]
			if old != nil && old.Status == dv.Status && old.Value.Value() == dv.Value.Value() {
				continue // OPC UA reports changes; an unchanged value keeps its timestamp
			}
			o.vals[name] = dv
			changed = append(changed, o.ids[k][i])
		}
	}
	o.mu.Unlock()
	for _, id := range changed {
		o.srv.ChangeNotification(id) // gopcua's server only notifies when told
	}
	return len(changed)
}

func (o *opcuaServer) close() {
	_ = o.srv.Close()
	o.cancel()
}
