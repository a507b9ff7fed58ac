package sim

import (
	"bytes"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"google.golang.org/protobuf/proto"

	"github.com/gemba-io/gemba/collectors/mqtt/sparkplug"
)

// ackTimeout bounds how long a publish waits for the broker's PUBACK before it is left out of the
// ledger (it may still arrive: the ledger only ever undercounts).
const ackTimeout = 30 * time.Second

// publishWait bounds how long a publish waits for the client to take it (paho's write timeout; it
// would wait 30 s in the moment between losing a broker and noticing). A publish that times out
// counts as not acknowledged.
const publishWait = time.Second

// copyStore hands out a copy of a stored publish. paho 1.5.1 (eclipse-paho/paho.mqtt.golang#703)
// resends what its store holds after a reconnect and sets the DUP flag on the stored packet itself,
// while a publish made in the moment the connection is back may be writing that same packet.
type copyStore struct{ paho.Store }

func (s copyStore) Get(key string) packets.ControlPacket {
	p := s.Store.Get(key)
	if pub, ok := p.(*packets.PublishPacket); ok {
		c := *pub
		return &c
	}
	return p
}

// newMQTTClient connects once, so that a broker that is not there is reported with the reason
// (connection refused, bad credentials); once connected, the client reconnects by itself. (With
// paho's connect retry, a missing broker held New for its whole wait and then read "<nil>".)
func newMQTTClient(broker, clientID string, will func(*paho.ClientOptions), onConnect paho.OnConnectHandler) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(clientID).
		SetCleanSession(true).SetConnectTimeout(2 * time.Second).SetKeepAlive(10 * time.Second).
		SetAutoReconnect(true).SetMaxReconnectInterval(time.Second).
		SetWriteTimeout(publishWait).SetOrderMatters(true).SetOnConnectHandler(onConnect).
		SetStore(copyStore{paho.NewMemoryStore()})
	if will != nil {
		will(o)
	}
	c := paho.NewClient(o)
	t := c.Connect()
	if !t.WaitTimeout(10 * time.Second) {
		c.Disconnect(0)
		return nil, fmt.Errorf("mqtt connect %s: no answer within 10s", broker)
	}
	if err := t.Error(); err != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("mqtt connect %s: %w", broker, err)
	}
	return c, nil
}

// acker waits for PUBACKs off the tick path, in publish order, and records what was acknowledged in
// the ledger. Its queue is bounded, so a broker that stops acknowledging slows the publishers down.
// A stop must not wait for a broker that is gone: shutdown unblocks publishers stuck on a full
// queue, and close gives up on the acknowledgements still outstanding after its timeout (they
// count as failed; the ledger only ever undercounts).
type acker struct {
	ledger   *Ledger
	queue    chan pending
	done     chan struct{}
	stopping chan struct{} // closed by shutdown: track no longer waits for room
	giveUp   chan struct{} // closed by close after its timeout: run stops waiting for PUBACKs
	stopOnce sync.Once
	mu       sync.Mutex
	acked    uint64 // messages
	failed   uint64
	tracked  uint64 // messages handed to track
}

type pending struct {
	tok      paho.Token
	source   string
	ms       int64
	deadline time.Time
}

func newAcker(l *Ledger) *acker {
	a := &acker{ledger: l, queue: make(chan pending, 1<<14), done: make(chan struct{}),
		stopping: make(chan struct{}), giveUp: make(chan struct{})}
	go a.run()
	return a
}

func (a *acker) run() {
	defer close(a.done)
	for p := range a.queue {
		ok := a.wait(p)
		if ok {
			a.ledger.add(p.source, p.ms)
		}
		a.mu.Lock()
		if ok {
			a.acked++
		} else {
			a.failed++
		}
		a.mu.Unlock()
	}
}

// wait reports whether p was acknowledged before its deadline or before close gave up.
func (a *acker) wait(p pending) bool {
	select {
	case <-p.tok.Done():
		return p.tok.Error() == nil
	default:
	}
	t := time.NewTimer(max(time.Until(p.deadline), time.Millisecond))
	defer t.Stop()
	select {
	case <-p.tok.Done():
		return p.tok.Error() == nil
	case <-t.C:
	case <-a.giveUp:
	}
	return false
}

func (a *acker) track(tok paho.Token, source string, ms int64) {
	a.mu.Lock()
	a.tracked++
	a.mu.Unlock()
	p := pending{tok, source, ms, time.Now().Add(ackTimeout)}
	select {
	case a.queue <- p: // room: always tracked, even while stopping
		return
	default:
	}
	select {
	case a.queue <- p:
	case <-a.stopping:
		a.mu.Lock()
		a.failed++
		a.mu.Unlock()
	}
}

// shutdown lets a publisher blocked on a full queue go; its message counts as not acknowledged.
// Publishers publish nothing more after it.
func (a *acker) shutdown() { a.stopOnce.Do(func() { close(a.stopping) }) }

func (a *acker) stopped() bool {
	select {
	case <-a.stopping:
		return true
	default:
		return false
	}
}

// close waits for the outstanding acknowledgements, at most timeout. No track may follow.
func (a *acker) close(timeout time.Duration) {
	a.shutdown()
	close(a.queue)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-a.done:
	case <-t.C:
		close(a.giveUp)
		<-a.done
	}
}

// settled reports whether every message tracked so far is acknowledged or failed.
func (a *acker) settled() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.acked+a.failed == a.tracked
}

func (a *acker) counts() (acked, failed uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.acked, a.failed
}

// jsonPublisher publishes one JSON message per machine and tick on <site>/<line>/<machine>/telemetry:
// {"ts": <unix ms>, "state": "running", "sku": "A-100", "parts": 1042, "fault": 0, "temperature": 71.2, ...}
// A bad-quality reading is sent as null.
type jsonPublisher struct {
	client   paho.Client
	site     string
	qos      byte
	machines []*Machine
	last     []int64
	ack      *acker
	buf      []byte
}

func newJSONPublisher(broker, clientID, site string, qos byte, machines []*Machine, ack *acker) (*jsonPublisher, error) {
	c, err := newMQTTClient(broker, clientID, nil, nil)
	if err != nil {
		return nil, err
	}
	p := &jsonPublisher{client: c, site: site, qos: qos, machines: machines, last: make([]int64, len(machines)), ack: ack}
	for _, m := range machines {
		ack.ledger.declare(DeviceID(m), signalsOf(m))
	}
	return p, nil
}

func signalsOf(m *Machine) []string {
	out := make([]string, len(m.Points))
	for i := range m.Points {
		out[i] = m.Signal(m.Points[i].Field)
	}
	return out
}

// Topic is the JSON telemetry topic of a machine.
func Topic(site string, m *Machine) string { return site + "/" + m.Line + "/" + m.Name + "/telemetry" }

func (p *jsonPublisher) publish(at time.Time) {
	for k, m := range p.machines {
		if p.ack.stopped() {
			return
		}
		ms := max(at.UnixMilli(), p.last[k]+1) // a source's times are unique: they identify its samples
		p.last[k] = ms
		p.buf = appendJSON(p.buf[:0], m, ms)
		tok := p.client.Publish(Topic(p.site, m), p.qos, false, append([]byte(nil), p.buf...))
		if p.qos > 0 {
			p.ack.track(tok, DeviceID(m), ms)
		}
	}
}

func appendJSON(b []byte, m *Machine, ms int64) []byte {
	b = append(b, `{"ts":`...)
	b = strconv.AppendInt(b, ms, 10)
	for i := range m.Points {
		pt := &m.Points[i]
		b = append(b, `,"`...)
		b = append(b, pt.Field...)
		b = append(b, `":`...)
		switch {
		case pt.Bad:
			b = append(b, "null"...)
		case pt.Kind == Float:
			n := len(b)
			b = strconv.AppendFloat(b, pt.F, 'f', -1, 64)
			if !bytes.ContainsAny(b[n:], ".eE") {
				b = append(b, ".0"...) // keep a float a float for parsers that infer the type
			}
		case pt.Kind == Int:
			b = strconv.AppendInt(b, pt.I, 10)
		default:
			b = strconv.AppendQuote(b, pt.S)
		}
	}
	return append(b, '}')
}

func (p *jsonPublisher) close() { p.client.Disconnect(250) }

// edgeNode is one Sparkplug B edge node (group = site) whose devices are machines. It sends NBIRTH
// and DBIRTHs on every connect and on a host's rebirth request, DDATA by alias every tick, and
// leaves an NDEATH as its will.
type edgeNode struct {
	client   paho.Client
	group    string
	node     string
	machines []*Machine
	ack      *acker
	// bdSeq of the current session: every connect registers a will with the next one, and the
	// NBIRTH that follows carries it (Sparkplug 3.0), so a host tells an old session's will from the
	// death of the current one.
	bdSeq atomic.Uint64

	rebirth chan struct{} // a birth is due before the next data
	seq     uint64
	lastMs  int64
}

func newEdgeNode(broker, group, node string, bdSeq uint64, machines []*Machine, ack *acker) (*edgeNode, error) {
	e := &edgeNode{group: group, node: node, machines: machines, ack: ack, rebirth: make(chan struct{}, 1)}
	e.bdSeq.Store(bdSeq)
	for _, m := range machines {
		ack.ledger.declare(DeviceID(m), signalsOf(m))
	}
	death, err := deathPayload(bdSeq)
	if err != nil {
		return nil, err
	}
	ncmd := e.topic("NCMD", "")
	var first atomic.Bool
	first.Store(true)
	onConnect := func(c paho.Client) {
		if first.CompareAndSwap(true, false) {
			return // the first connect is set up below, before any data
		}
		// Sparkplug: subscribe to commands before the birth, and be born again on every connect.
		c.Subscribe(ncmd, 1, e.onCommand)
		e.requestBirth()
	}
	c, err := newMQTTClient(broker, "gemba-sim-"+group+"-"+node, func(o *paho.ClientOptions) {
		o.SetBinaryWill(e.topic("NDEATH", ""), death, 1, false)
		o.SetReconnectingHandler(func(_ paho.Client, o *paho.ClientOptions) {
			bd := (e.bdSeq.Load() + 1) % 256
			if d, err := deathPayload(bd); err == nil {
				e.bdSeq.Store(bd)
				o.SetBinaryWill(e.topic("NDEATH", ""), d, 1, false)
			}
		})
	}, onConnect)
	if err != nil {
		return nil, err
	}
	e.client = c
	// The first session, here rather than in the connect handler, which paho runs in a goroutine
	// of its own, maybe after the first ticks' data: DDATA before NBIRTH is not Sparkplug.
	if tok := c.Subscribe(ncmd, 1, e.onCommand); !tok.WaitTimeout(10 * time.Second) {
		c.Disconnect(0)
		return nil, fmt.Errorf("mqtt subscribe %s: no answer within 10s", ncmd)
	} else if err := tok.Error(); err != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("mqtt subscribe %s: %w", ncmd, err)
	}
	e.requestBirth()
	return e, nil
}

// deathPayload is the NDEATH an edge node registers as its will when it connects.
func deathPayload(bdSeq uint64) ([]byte, error) {
	return proto.Marshal(&sparkplug.Payload{Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())),
		Metrics: []*sparkplug.Payload_Metric{{Name: proto.String("bdSeq"), Datatype: proto.Uint32(uint32(sparkplug.Int64)),
			Value: &sparkplug.Payload_Metric_LongValue{LongValue: bdSeq}}}})
}

func (e *edgeNode) topic(typ, device string) string {
	t := "spBv1.0/" + e.group + "/" + typ + "/" + e.node
	if device != "" {
		t += "/" + device
	}
	return t
}

func (e *edgeNode) requestBirth() {
	select {
	case e.rebirth <- struct{}{}:
	default:
	}
}

func (e *edgeNode) onCommand(_ paho.Client, msg paho.Message) {
	var p sparkplug.Payload
	if proto.Unmarshal(msg.Payload(), &p) != nil {
		return
	}
	for _, m := range p.Metrics {
		if m.GetName() == "Node Control/Rebirth" && m.GetBooleanValue() {
			e.requestBirth()
		}
	}
}

// aliasStride leaves room for every point of a machine (basePoints + up to 99,990 extra signals).
const aliasStride = 100000

// DeviceID is a machine's id, <line>.<machine>: its Sparkplug device id (so that the template
// "{device}.{metric}" gives the same signal names as the other protocols), its ledger source and
// its OPC UA folder.
func DeviceID(m *Machine) string { return m.Line + "." + m.Name }

func (e *edgeNode) nextMs(at time.Time) int64 {
	e.lastMs = max(at.UnixMilli(), e.lastMs+1)
	return e.lastMs
}

func (e *edgeNode) send(typ, device string, p *sparkplug.Payload, source string) {
	if typ != "NDEATH" {
		p.Seq = proto.Uint64(e.seq)
		e.seq = (e.seq + 1) % 256
	}
	if e.ack.stopped() {
		return
	}
	b, err := proto.Marshal(p)
	if err != nil {
		return // unreachable: the payload is built from plain values
	}
	// NBIRTH goes at QoS 0 (Sparkplug 3.0 asks it of every birth and data message): paho resends an
	// unacknowledged QoS 1 publish after a reconnect, and an old session's birth arriving after its
	// own NDEATH would carry a bdSeq that is no longer alive. Devices' births and data stay QoS 1:
	// the ledger counts only what the broker acknowledged.
	qos := byte(1)
	if typ == "NBIRTH" {
		qos = 0
	}
	tok := e.client.Publish(e.topic(typ, device), qos, false, b)
	if source != "" {
		e.ack.track(tok, source, int64(p.GetTimestamp()))
	}
}

func (e *edgeNode) publish(at time.Time) {
	select {
	case <-e.rebirth:
		e.seq = 0
		ms := e.nextMs(at)
		e.send("NBIRTH", "", &sparkplug.Payload{Timestamp: proto.Uint64(uint64(ms)), Metrics: []*sparkplug.Payload_Metric{
			{Name: proto.String("bdSeq"), Datatype: proto.Uint32(uint32(sparkplug.Int64)), Value: &sparkplug.Payload_Metric_LongValue{LongValue: e.bdSeq.Load()}},
			{Name: proto.String("Node Control/Rebirth"), Datatype: proto.Uint32(uint32(sparkplug.Boolean)), Value: &sparkplug.Payload_Metric_BooleanValue{BooleanValue: false}},
		}}, "")
		for k, m := range e.machines {
			ms, id := e.nextMs(at), DeviceID(m)
			e.send("DBIRTH", id, e.payload(k, m, ms, true), id)
		}
	default:
	}
	for k, m := range e.machines {
		ms, id := e.nextMs(at), DeviceID(m)
		e.send("DDATA", id, e.payload(k, m, ms, false), id)
	}
}

// payload carries every metric of a machine; births name them and declare aliases and types, data
// refers to them by alias. Aliases are unique across the whole edge node (Sparkplug 3.0), so device
// k's point i is k*aliasStride + i + 1.
func (e *edgeNode) payload(k int, m *Machine, ms int64, birth bool) *sparkplug.Payload {
	p := &sparkplug.Payload{Timestamp: proto.Uint64(uint64(ms)), Metrics: make([]*sparkplug.Payload_Metric, len(m.Points))}
	for i := range m.Points {
		pt := &m.Points[i]
		mt := &sparkplug.Payload_Metric{Alias: proto.Uint64(uint64(k*aliasStride + i + 1)), Timestamp: proto.Uint64(uint64(ms))}
		var dt sparkplug.DataType
		switch pt.Kind {
		case Float:
			dt = sparkplug.Double
			mt.Value = &sparkplug.Payload_Metric_DoubleValue{DoubleValue: pt.F}
		case Int:
			dt = sparkplug.Int64
			mt.Value = &sparkplug.Payload_Metric_LongValue{LongValue: uint64(pt.I)}
		default:
			dt = sparkplug.String
			mt.Value = &sparkplug.Payload_Metric_StringValue{StringValue: pt.S}
		}
		if birth {
			mt.Name = proto.String(pt.Field)
			mt.Datatype = proto.Uint32(uint32(dt))
		}
		if pt.Bad {
			mt.Value = nil
			mt.IsNull = proto.Bool(true)
		}
		p.Metrics[i] = mt
	}
	return p
}

func (e *edgeNode) close() { e.client.Disconnect(250) } // a clean disconnect: the broker drops the will
