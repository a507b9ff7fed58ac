package mqtt

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/gemba-io/gemba/collectors/mqtt/sparkplug"
	"github.com/gemba-io/gemba/signal"
)

// Sparkplug B host side: births declare metric names, aliases and datatypes; data refers to them
// by alias; deaths make every signal of the node (or device) Bad until the next birth.

const spNamespace = "spBv1.0"

// spHost is the Sparkplug state of one subscription. Only the collector's worker goroutine uses it.
type spHost struct {
	nodes map[spKey]*spNode
	// counters the collector exports
	seqGaps func(topic string, got, want int)
	// rebirth requests made while mapping the current batch, published by the worker
	pending []spKey
	// dirty is set when a birth or death changed what must survive a restart (see spstate.go)
	dirty bool
	// committed is the snapshot of the last durable batch that changed the state (the loaded
	// state before any): the worker goes back to it when a session is reset, since the broker
	// resends what the batches after it held. Written by the committer between jobs.
	committed []byte
}

type spKey struct{ group, node string }

type spNode struct {
	bdSeq   int64 // bdSeq of the current birth; -1 unknown
	seq     int   // last seq seen; -1 unknown (no birth since start)
	alive   bool
	aliases map[uint64]*spMetric
	// metrics by device ("" for the node itself) and name, for data by name and for deaths
	devices     map[string]map[string]*spMetric
	lastRebirth time.Time
}

type spMetric struct {
	alias    *uint64
	name     string
	device   string
	datatype sparkplug.DataType
	signal   string
	// dups, in an entry of spNode.aliases only, lists the metrics that declared the same alias:
	// data by that alias cannot be attributed to one of them.
	dups []*spMetric
}

func (md *spMetric) ambiguous() bool { return len(md.dups) > 0 }

// declareAlias maps md's alias. Aliases are unique per edge node, its devices included: one
// already held by a live metric becomes ambiguous, and declareAlias reports the metric that held
// it. Guessing (the last declaration wins) would store readings under another metric's name.
func (n *spNode) declareAlias(md *spMetric) (clash *spMetric) {
	a := *md.alias
	cur := n.aliases[a]
	switch {
	case cur == nil:
		n.aliases[a] = md
		return nil
	case cur.ambiguous():
		cur.dups = append(cur.dups, md)
		return cur.dups[0]
	}
	n.aliases[a] = &spMetric{alias: md.alias, dups: []*spMetric{cur, md}}
	return cur
}

// dropAliases forgets the aliases of one device's metrics ("" for the node's own), which its
// rebirth replaces. An ambiguity left with a single metric resolves to it.
func (n *spNode) dropAliases(device string) {
	for a, md := range n.aliases {
		if !md.ambiguous() {
			if md.device == device {
				delete(n.aliases, a)
			}
			continue
		}
		md.dups = slices.DeleteFunc(md.dups, func(d *spMetric) bool { return d.device == device })
		switch len(md.dups) {
		case 0:
			delete(n.aliases, a)
		case 1:
			n.aliases[a] = md.dups[0]
		}
	}
}

// where names a metric for messages: "Temp" or "Temp of device d1".
func (md *spMetric) where() string {
	if md.device == "" {
		return strconv.Quote(md.name)
	}
	return strconv.Quote(md.name) + " of device " + md.device
}

func newSpHost() *spHost {
	return &spHost{nodes: map[spKey]*spNode{}, seqGaps: func(string, int, int) {}}
}

// spTopic is a parsed Sparkplug topic: spBv1.0/<group>/<type>/<node>[/<device>].
type spTopic struct {
	group, typ, node, device string
}

func parseSpTopic(levels []string) (spTopic, bool) {
	if len(levels) < 3 || levels[0] != spNamespace {
		return spTopic{}, false
	}
	if levels[1] == "STATE" {
		return spTopic{typ: "STATE"}, true
	}
	t := spTopic{group: levels[1], typ: levels[2]}
	switch len(levels) {
	case 4:
		t.node = levels[3]
	case 5:
		t.node, t.device = levels[3], levels[4]
	default:
		return t, false
	}
	return t, true
}

// parseSparkplug maps one Sparkplug B message.
func (s *sub) parseSparkplug(dst []signal.Sample, m *msgCtx, payload []byte, h *spHost, rebirthOnGap bool, rebirthEvery time.Duration) []signal.Sample {
	t, ok := parseSpTopic(m.lv())
	if !ok {
		m.addProblem(reasonSpTopic, "not a Sparkplug B topic (want spBv1.0/<group>/<type>/<node>[/<device>])")
		return dst
	}
	switch t.typ {
	case "STATE", "NCMD", "DCMD":
		return dst // host and command traffic: not telemetry
	case "NBIRTH", "NDEATH", "NDATA", "DBIRTH", "DDEATH", "DDATA":
	default:
		m.addProblem(reasonSpTopic, "unknown Sparkplug message type %q", t.typ)
		return dst
	}
	if (t.device == "") != (t.typ[0] == 'N') {
		m.addProblem(reasonSpTopic, "%s topic with wrong number of levels", t.typ)
		return dst
	}
	var p sparkplug.Payload
	if err := proto.Unmarshal(payload, &p); err != nil {
		m.addProblem(reasonProtobuf, "%v", err)
		return dst
	}
	key := spKey{t.group, t.node}
	n := h.nodes[key]
	if n == nil {
		n = &spNode{bdSeq: -1, seq: -1}
		h.nodes[key] = n
	}
	ptime := m.recv
	if p.Timestamp != nil {
		ptime = msTime(p.GetTimestamp())
	}
	c := tctx{topic: m.topic, levels: m.levels, group: t.group, node: t.node, device: t.device}
	labels := s.labelsFor(m, &c)
	requestRebirth := func() {
		if rebirthOnGap && m.recv.Sub(n.lastRebirth) >= rebirthEvery {
			n.lastRebirth = m.recv
			h.pending = append(h.pending, key)
		}
	}

	if t.typ == "NDEATH" {
		bd, has := bdSeqOf(&p)
		if has && n.bdSeq >= 0 && bd != n.bdSeq {
			return dst // a late will from an earlier session; the current one is alive
		}
		n.alive, n.seq = false, -1
		h.dirty = true
		return s.spDeath(dst, m, n, "", ptime, "NDEATH", labels)
	}

	// Every other message of a node carries the next seq (0..255, wrapping).
	if p.Seq == nil {
		m.addProblem(reasonProtobuf, "%s without seq", t.typ)
	}
	seq := int(p.GetSeq())
	switch {
	case t.typ == "NBIRTH":
		n.seq = seq
	case n.seq < 0:
		// Data from a node whose birth we have not seen: ask for one. After an agent restart the
		// saved birth still names the aliases, so the sequence is simply picked up again.
		if !n.alive {
			requestRebirth()
		}
		n.seq = seq
	default:
		if want := (n.seq + 1) % 256; seq != want {
			h.seqGaps(m.topic, seq, want)
			requestRebirth()
		}
		n.seq = seq
	}

	if strings.HasSuffix(t.typ, "BIRTH") || t.typ == "DDEATH" {
		h.dirty = true
	}
	switch t.typ {
	case "NBIRTH":
		if bd, ok := bdSeqOf(&p); ok {
			n.bdSeq = bd
		}
		n.alive = true
		// The node's own metrics are replaced. Device metrics stay until each device's own DBIRTH:
		// a broker that redelivers after a restart can interleave old device data with the new
		// births, and that data was acknowledged to its publisher.
		if n.aliases == nil || n.devices == nil {
			n.aliases = map[uint64]*spMetric{}
			n.devices = map[string]map[string]*spMetric{}
		}
		n.dropAliases("")
		n.devices[""] = map[string]*spMetric{}
	case "DBIRTH":
		if !n.alive {
			requestRebirth()
		}
		if n.devices == nil {
			n.devices = map[string]map[string]*spMetric{"": {}}
			n.aliases = map[uint64]*spMetric{}
		}
		// A device rebirth replaces that device's metrics.
		n.dropAliases(t.device)
		n.devices[t.device] = map[string]*spMetric{}
	case "DDEATH":
		return s.spDeath(dst, m, n, t.device, ptime, "DDEATH", labels)
	}
	birth := strings.HasSuffix(t.typ, "BIRTH")
	for _, mt := range p.Metrics {
		var md *spMetric
		switch {
		case birth:
			if mt.GetName() == "" {
				m.addProblem(reasonProtobuf, "%s metric without a name", t.typ)
				continue
			}
			md = &spMetric{name: mt.GetName(), device: t.device, datatype: sparkplug.DataType(mt.GetDatatype())}
			c.field = metricField(md.name)
			sn, err := s.signal.expand(&c)
			if err != nil {
				m.addProblem(reasonBadName, "%s: %v", md.name, err)
				continue
			}
			md.signal = sn
			n.devices[t.device][md.name] = md
			if mt.Alias != nil {
				md.alias = proto.Uint64(mt.GetAlias())
				if other := n.declareAlias(md); other != nil {
					// Both metrics are born (by name they are distinct); the alias is not usable.
					// No rebirth request: the node would send the same birth again.
					m.addProblem(reasonDuplicateAlias, "alias %d declared by %s and %s in the births of %s/%s: data by this alias is not stored until a birth declares it once",
						mt.GetAlias(), other.where(), md.where(), t.group, t.node)
				}
			}
		case mt.Name != nil:
			md = n.devices[t.device][mt.GetName()]
			if md == nil {
				m.addProblem(reasonUnknownAlias, "metric %q was not in the birth", mt.GetName())
				requestRebirth()
				continue
			}
		default:
			md = n.aliases[mt.GetAlias()]
			if md != nil && md.ambiguous() {
				m.addProblem(reasonDuplicateAlias, "alias %d is declared by %d metrics of %s/%s: value not stored", mt.GetAlias(), len(md.dups), t.group, t.node)
				continue
			}
			if md == nil || md.device != t.device {
				m.addProblem(reasonUnknownAlias, "alias %d not in the birth of %s", mt.GetAlias(), strings.Join(m.lv()[3:], "/"))
				requestRebirth()
				continue
			}
		}
		if skipMetric(md.name) {
			continue
		}
		// The birth is the contract. A data message that declares another datatype keeps its value
		// (decoded by the datatype it declares) but not the Good quality: the reading contradicts
		// what the signal was born as.
		dt := md.datatype
		mismatch := ""
		if mt.Datatype != nil && sparkplug.DataType(mt.GetDatatype()) != md.datatype {
			dt = sparkplug.DataType(mt.GetDatatype())
			mismatch = "datatype " + dt.String() + " differs from the birth's " + md.datatype.String()
			m.addProblem(reasonDatatypeMismatch, "%s: %s", md.where(), mismatch)
		}
		smp := signal.Sample{Signal: md.signal, Time: ptime, Source: m.source, Labels: labels}
		if mt.Timestamp != nil {
			smp.Time = msTime(mt.GetTimestamp())
		}
		if mt.GetIsHistorical() {
			// History must not pass for a current reading: it is marked for the feature engine and hub.
			smp.Labels = append(append(signal.Labels(nil), labels...), signal.Label{Key: "historical", Value: "true"})
		}
		if mt.GetIsNull() {
			smp.Quality, smp.Reason = signal.Bad, "null value"
			dst = append(dst, smp)
			continue
		}
		if els, cut, ok, err := spElements(mt, dt); ok {
			// arrays and DataSets: one sample per element, signal[i] or signal.column[row]
			if err != nil {
				m.addProblem(reasonWrongType, "%s: %v", md.name, err)
				smp.Quality, smp.Reason = signal.Bad, err.Error()
				dst = append(dst, smp)
				continue
			}
			if cut > 0 {
				m.addProblem(reasonUnsupported, "%s: %d %s elements beyond the first %d not stored", md.where(), cut, dt, maxSpElements)
			}
			for _, e := range els {
				es := smp
				es.Signal = md.signal + e.suffix
				switch {
				case e.err != nil:
					es.Quality, es.Reason = signal.Bad, e.err.Error()
				case mismatch != "":
					es.Value, es.Quality, es.Reason = e.val, signal.Bad, mismatch
				default:
					es.Value = e.val
				}
				dst = append(dst, es)
			}
			continue
		}
		v, ok, err := spValue(mt, dt)
		if err != nil {
			m.addProblem(reasonWrongType, "%s: %v", md.name, err)
			smp.Quality, smp.Reason = signal.Bad, err.Error()
			dst = append(dst, smp)
			continue
		}
		if !ok {
			// Template, File, PropertySet: no reading to store. Counted and logged, not silent.
			m.addProblem(reasonUnsupported, "%s: datatype %s makes no sample (not stored)", md.where(), dt)
			continue
		}
		smp.Value = v
		if mismatch != "" {
			smp.Quality, smp.Reason = signal.Bad, mismatch
		}
		dst = append(dst, smp)
	}
	return dst
}

// spDeath marks every signal of a node (device "" covers its devices too) or of one device Bad.
func (s *sub) spDeath(dst []signal.Sample, m *msgCtx, n *spNode, device string, at time.Time, why string, labels signal.Labels) []signal.Sample {
	devs := make([]string, 0, len(n.devices))
	for dev := range n.devices {
		if device == "" || dev == device {
			devs = append(devs, dev)
		}
	}
	slices.Sort(devs)
	for _, dev := range devs {
		metrics := n.devices[dev]
		names := make([]string, 0, len(metrics))
		for name := range metrics {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			md := metrics[name]
			if skipMetric(md.name) {
				continue
			}
			dst = append(dst, signal.Sample{Signal: md.signal, Time: at, Quality: signal.Bad, Reason: why, Source: m.source, Labels: labels})
		}
	}
	return dst
}

// skipMetric leaves out the session bookkeeping metrics every node publishes.
func skipMetric(name string) bool {
	return name == "bdSeq" || strings.HasPrefix(name, "Node Control/") || strings.HasPrefix(name, "Device Control/")
}

// metricField is what {metric} expands to: Sparkplug folders ("Motor/Speed") become dots.
func metricField(name string) string { return strings.ReplaceAll(name, "/", ".") }

func bdSeqOf(p *sparkplug.Payload) (int64, bool) {
	for _, mt := range p.Metrics {
		if mt.GetName() == "bdSeq" {
			switch v := mt.Value.(type) {
			case *sparkplug.Payload_Metric_LongValue:
				return int64(v.LongValue), true
			case *sparkplug.Payload_Metric_IntValue:
				return int64(v.IntValue), true
			}
		}
	}
	return 0, false
}

func msTime(ms uint64) time.Time {
	if ms > math.MaxInt64 {
		ms = math.MaxInt64
	}
	return time.UnixMilli(int64(ms)).UTC()
}

// spValue converts a metric's value by its datatype. ok is false for types that are not one reading.
func spValue(mt *sparkplug.Payload_Metric, dt sparkplug.DataType) (signal.Value, bool, error) {
	switch v := mt.Value.(type) {
	case *sparkplug.Payload_Metric_IntValue:
		switch dt {
		case sparkplug.Int8:
			return signal.Int(int64(int8(v.IntValue))), true, nil
		case sparkplug.Int16:
			return signal.Int(int64(int16(v.IntValue))), true, nil
		case sparkplug.Int32:
			return signal.Int(int64(int32(v.IntValue))), true, nil
		case sparkplug.UInt8, sparkplug.UInt16, sparkplug.UInt32:
			return signal.Int(int64(v.IntValue)), true, nil
		}
	case *sparkplug.Payload_Metric_LongValue:
		switch dt {
		case sparkplug.Int64:
			return signal.Int(int64(v.LongValue)), true, nil
		case sparkplug.DateTime:
			dv, err := dateTimeValue(v.LongValue)
			return dv, err == nil, err
		case sparkplug.UInt64, sparkplug.UInt32:
			return uint64Value(v.LongValue), true, nil
		}
	case *sparkplug.Payload_Metric_BytesValue:
		if dt == sparkplug.Bytes {
			return bytesValue(v.BytesValue), true, nil
		}
	case *sparkplug.Payload_Metric_FloatValue:
		if dt == sparkplug.Float {
			return signal.Float(float64(v.FloatValue)), true, nil
		}
	case *sparkplug.Payload_Metric_DoubleValue:
		if dt == sparkplug.Double {
			return signal.Float(v.DoubleValue), true, nil
		}
	case *sparkplug.Payload_Metric_BooleanValue:
		if dt == sparkplug.Boolean {
			return signal.Bool(v.BooleanValue), true, nil
		}
	case *sparkplug.Payload_Metric_StringValue:
		switch dt {
		case sparkplug.String, sparkplug.Text, sparkplug.UUID:
			if !utf8.ValidString(v.StringValue) {
				return signal.Value{}, false, errInvalidUTF8
			}
			return signal.String(v.StringValue), true, nil
		}
	case nil:
		return signal.Value{}, false, errNoValue
	default:
		return signal.Value{}, false, nil
	}
	if dt >= sparkplug.DataSet {
		return signal.Value{}, false, nil
	}
	return signal.Value{}, false, &typeMismatch{dt: dt}
}

type typeMismatch struct{ dt sparkplug.DataType }

func (e *typeMismatch) Error() string { return "value does not match datatype " + e.dt.String() }

type constErr string

func (e constErr) Error() string { return string(e) }

const (
	errInvalidUTF8 = constErr("string is not valid UTF-8")
	errNoValue     = constErr("metric has no value and is not null")
)

// rebirthPayload is the NCMD a host sends to ask a node for a new NBIRTH.
func rebirthPayload(now time.Time) ([]byte, error) {
	ts := uint64(now.UnixMilli())
	name := "Node Control/Rebirth"
	dt := uint32(sparkplug.Boolean)
	p := &sparkplug.Payload{
		Timestamp: &ts,
		Metrics: []*sparkplug.Payload_Metric{{
			Name: &name, Timestamp: &ts, Datatype: &dt,
			Value: &sparkplug.Payload_Metric_BooleanValue{BooleanValue: true},
		}},
	}
	return proto.Marshal(p)
}
