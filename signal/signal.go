// Package signal is the data contract shared by the gemba agent and hub: samples, features,
// the buffered chunk format and the wire envelope published to NATS. It imports nothing of ours.
package signal

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Kind is the type of a Value.
type Kind uint8

// Value kinds. The zero Kind is an empty value (no reading).
const (
	KindNone Kind = iota
	KindFloat
	KindInt
	KindBool
	KindString
)

func (k Kind) String() string {
	switch k {
	case KindFloat:
		return "float"
	case KindInt:
		return "int"
	case KindBool:
		return "bool"
	case KindString:
		return "string"
	}
	return "none"
}

// Value is a typed reading: float64, int64, bool or string. The zero Value has KindNone.
// It is a small value type so samples can be passed and stored without allocation.
type Value struct {
	kind Kind
	num  uint64 // float64 bits, int64 or bool
	str  string
}

// Float returns a float value.
func Float(f float64) Value { return Value{kind: KindFloat, num: math.Float64bits(f)} }

// Int returns an integer value.
func Int(i int64) Value { return Value{kind: KindInt, num: uint64(i)} }

// Bool returns a boolean value.
func Bool(b bool) Value {
	v := Value{kind: KindBool}
	if b {
		v.num = 1
	}
	return v
}

// String returns a string value.
func String(s string) Value { return Value{kind: KindString, str: s} }

// Kind reports the value's type.
func (v Value) Kind() Kind { return v.kind }

// Float returns the value as float64 if it is a float.
func (v Value) Float() (float64, bool) {
	return math.Float64frombits(v.num), v.kind == KindFloat
}

// Int returns the value as int64 if it is an int.
func (v Value) Int() (int64, bool) { return int64(v.num), v.kind == KindInt }

// Bool returns the value as bool if it is a bool.
func (v Value) Bool() (bool, bool) { return v.num != 0, v.kind == KindBool }

// Str returns the value as string if it is a string.
func (v Value) Str() (string, bool) { return v.str, v.kind == KindString }

// Number converts numeric and boolean values to float64; strings and empty values report false.
func (v Value) Number() (float64, bool) {
	switch v.kind {
	case KindFloat:
		return math.Float64frombits(v.num), true
	case KindInt:
		return float64(int64(v.num)), true
	case KindBool:
		return float64(v.num), true
	}
	return 0, false
}

// Equal reports whether two values have the same kind and the same bits (NaN equals NaN).
func (v Value) Equal(o Value) bool { return v == o }

// Text renders the value for keys and logs (a string value is returned as is).
func (v Value) Text() string {
	switch v.kind {
	case KindFloat:
		return strconv.FormatFloat(math.Float64frombits(v.num), 'g', -1, 64)
	case KindInt:
		return strconv.FormatInt(int64(v.num), 10)
	case KindBool:
		return strconv.FormatBool(v.num != 0)
	case KindString:
		return v.str
	}
	return ""
}

func (v Value) String() string {
	if v.kind == KindString {
		return strconv.Quote(v.str)
	}
	return v.Text()
}

// Quality follows the OPC UA status class: Good, Uncertain or Bad.
type Quality uint8

// Qualities. The zero value is Good.
const (
	Good Quality = iota
	Uncertain
	Bad
)

func (q Quality) String() string {
	switch q {
	case Good:
		return "good"
	case Uncertain:
		return "uncertain"
	case Bad:
		return "bad"
	}
	return "quality(" + strconv.Itoa(int(q)) + ")"
}

// ParseQuality parses "good", "uncertain" or "bad".
func ParseQuality(s string) (Quality, error) {
	switch s {
	case "good", "":
		return Good, nil
	case "uncertain":
		return Uncertain, nil
	case "bad":
		return Bad, nil
	}
	return Good, fmt.Errorf("unknown quality %q (want good, uncertain or bad)", s)
}

// Label is one key/value pair attached to a sample or feature.
type Label struct {
	Key, Value string
}

// Labels is an ordered list of labels. Encoders keep the order; keep it sorted by key
// where records are compared.
type Labels []Label

// Get returns the value of key.
func (l Labels) Get(key string) (string, bool) {
	for _, kv := range l {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}

// Sample is one reading of one signal.
type Sample struct {
	// Signal is the stable name from config, e.g. "line1.press.temperature".
	Signal string
	// Time is the source timestamp: OPC UA SourceTimestamp, the payload's own time, else receive time.
	Time time.Time
	// Value is the typed reading. A Bad sample may carry no value.
	Value Value
	// Quality is Good, Uncertain or Bad.
	Quality Quality
	// Reason explains a non-Good quality: an OPC UA status code name or a parse error.
	Reason string
	// Source names where the sample came from: collector name and node/topic.
	Source string
	// Labels are extra dimensions (e.g. from MQTT topic levels).
	Labels Labels
}

// Feature is a statistic computed at the edge over one window of one signal.
type Feature struct {
	Signal      string
	Name        string // mean, p95, delta, time_in_state, units_produced, ...
	WindowStart time.Time
	WindowEnd   time.Time
	Value       float64
	Count       int64 // samples the feature was computed from
	Labels      Labels
	// Partial is set when the window was not fully observed (agent start, crash, gap).
	Partial bool
}

// Stream names a buffered, separately ordered stream of records.
type Stream uint8

// Streams. Each has its own sequence numbers, buffer queue and NATS subject.
const (
	StreamSamples Stream = iota
	StreamFeatures
	StreamStatus
	NumStreams
)

var streamNames = [NumStreams]string{"samples", "features", "status"}

func (s Stream) String() string {
	if s < NumStreams {
		return streamNames[s]
	}
	return "stream(" + strconv.Itoa(int(s)) + ")"
}

// ParseStream parses a stream name.
func ParseStream(name string) (Stream, error) {
	for i, n := range streamNames {
		if n == name {
			return Stream(i), nil
		}
	}
	return 0, fmt.Errorf("unknown stream %q (want samples, features or status)", name)
}
