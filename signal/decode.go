package signal

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// DecodeBatch decodes a message published by the agent. It never panics on bad input; errors wrap
// ErrCorrupt and say what was wrong.
//
// Batches in the exact form this package writes take a fast path (decode_fast.go); anything else,
// including every malformed input, is decoded (or rejected) by the general encoding/json decoder
// below, which is also the reference the fast path is tested and fuzzed against.
func DecodeBatch(data []byte) (*Batch, error) {
	if b, ok := decodeBatchFast(data); ok {
		return b, nil
	}
	return decodeBatchJSON(data)
}

// decodeBatchJSON is the general decoder: any valid JSON layout of the envelope is accepted.
func decodeBatchJSON(data []byte) (*Batch, error) {
	var w wireBatch
	// json.Unmarshal, unlike a json.Decoder, rejects anything after the object (even a stray '}').
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("%w: batch: %v", ErrCorrupt, err)
	}
	if w.Schema == 0 || w.Schema > SchemaVersion {
		return nil, fmt.Errorf("%w: batch: schema %d unsupported (this decoder reads %d)", ErrCorrupt, w.Schema, SchemaVersion)
	}
	if err := checkIncarnation(w.Schema, w.Incarnation); err != nil {
		return nil, fmt.Errorf("%w: batch: %v", ErrCorrupt, err)
	}
	if w.Schema < 2 {
		w.Incarnation = "" // not a schema-1 field: ignored, as it is not checked either
	}
	st, err := ParseStream(w.Stream)
	if err != nil {
		return nil, fmt.Errorf("%w: batch: %v", ErrCorrupt, err)
	}
	if !delayInRange(w.DelayMS) {
		return nil, fmt.Errorf("%w: batch: delay_ms %d out of range", ErrCorrupt, w.DelayMS)
	}
	b := &Batch{Header: Header{
		Schema: w.Schema, Agent: w.Agent, Site: w.Site, Stream: st, ConfigVersion: w.ConfigVersion,
		Incarnation: w.Incarnation, FirstSeq: w.FirstSeq, LastSeq: w.LastSeq, Count: w.Count, Historical: w.Historical,
		Delay:  time.Duration(w.DelayMS) * time.Millisecond,
		Oldest: w.Oldest.t, Newest: w.Newest.t, Sent: w.Sent.t,
	}}
	if len(w.Records) == 0 || bytes.Equal(w.Records, []byte("null")) {
		return nil, fmt.Errorf("%w: batch: records missing", ErrCorrupt)
	}
	switch st {
	case StreamSamples:
		b.Samples, err = decodeSamples(w.Records)
	case StreamFeatures:
		b.Features, err = decodeFeatures(w.Records)
	case StreamStatus:
		err = json.Unmarshal(w.Records, &b.Status)
		for i := range b.Status {
			b.Status[i].Time = b.Status[i].Time.UTC() // every decoded time is UTC
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: batch %s:%s:%d: %v", ErrCorrupt, w.Agent, w.Stream, w.FirstSeq, err)
	}
	return b, nil
}

// checkIncarnation: from schema 2 every message names its buffer incarnation, which is one part of
// the message id and so cannot contain its separator.
func checkIncarnation(schema int, inc string) error {
	switch {
	case schema < 2:
		return nil
	case inc == "":
		return fmt.Errorf("schema %d: incarnation missing", schema)
	case strings.ContainsAny(inc, ":"+NotInToken):
		return fmt.Errorf("incarnation %q contains a character a message id or subject token cannot hold", inc)
	}
	return nil
}

// delayInRange reports whether ms milliseconds fit a time.Duration (about ±292 years).
func delayInRange(ms int64) bool {
	const limit = math.MaxInt64 / int64(time.Millisecond)
	return ms >= -limit && ms <= limit
}

// DecodeSamples decodes a JSON array of samples, as stored in a samples Chunk.
func DecodeSamples(records []byte) ([]Sample, error) {
	if s, ok := decodeSamplesFast(records); ok {
		return s, nil
	}
	s, err := decodeSamples(records)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return s, nil
}

// DecodeFeatures decodes a JSON array of features, as stored in a features Chunk.
func DecodeFeatures(records []byte) ([]Feature, error) {
	if f, ok := decodeFeaturesFast(records); ok {
		return f, nil
	}
	f, err := decodeFeatures(records)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return f, nil
}

type wireBatch struct {
	Schema        int        `json:"schema"`
	Agent         string     `json:"agent"`
	Site          string     `json:"site"`
	Stream        string     `json:"stream"`
	ConfigVersion string     `json:"config_version"`
	Incarnation   string     `json:"incarnation"`
	FirstSeq      uint64     `json:"first_seq"`
	LastSeq       uint64     `json:"last_seq"`
	Count         int        `json:"count"`
	Historical    bool       `json:"historical"`
	DelayMS       int64      `json:"delay_ms"`
	Oldest        wireTime   `json:"oldest"`
	Newest        wireTime   `json:"newest"`
	Sent          wireTime   `json:"sent"`
	Records       rawRecords `json:"records"`
}

// rawRecords keeps the records array as a sub-slice of the input instead of copying it like
// json.RawMessage; it is decoded before DecodeBatch returns and never retained.
type rawRecords []byte

func (r *rawRecords) UnmarshalJSON(b []byte) error {
	*r = b
	return nil
}

type wireSample struct {
	Sig string     `json:"sig"`
	TS  wireTime   `json:"ts"`
	F   *wireFloat `json:"f"`
	I   *int64     `json:"i"`
	B   *bool      `json:"b"`
	S   *string    `json:"s"`
	Q   string     `json:"q"`
	R   string     `json:"r"`
	Src string     `json:"src"`
	Lbl wireLabels `json:"lbl"`
}

type wireFeature struct {
	Sig     string     `json:"sig"`
	Name    string     `json:"name"`
	Start   wireTime   `json:"start"`
	End     wireTime   `json:"end"`
	V       wireFloat  `json:"v"`
	N       int64      `json:"n"`
	Partial bool       `json:"partial"`
	Lbl     wireLabels `json:"lbl"`
}

// decodeSamples and decodeFeatures are the general (encoding/json) record decoders.
func decodeSamples(data []byte) ([]Sample, error) {
	var ws []wireSample
	if err := json.Unmarshal(data, &ws); err != nil {
		return nil, err
	}
	out := make([]Sample, len(ws))
	for i := range ws {
		w := &ws[i]
		s := &out[i]
		s.Signal, s.Time, s.Reason, s.Source, s.Labels = w.Sig, w.TS.t, w.R, w.Src, Labels(w.Lbl)
		n := 0
		if w.F != nil {
			s.Value, n = Float(float64(*w.F)), n+1
		}
		if w.I != nil {
			s.Value, n = Int(*w.I), n+1
		}
		if w.B != nil {
			s.Value, n = Bool(*w.B), n+1
		}
		if w.S != nil {
			s.Value, n = String(*w.S), n+1
		}
		if n > 1 {
			return nil, fmt.Errorf("record %d (%s): more than one value field", i, w.Sig)
		}
		q, err := ParseQuality(w.Q)
		if err != nil {
			return nil, fmt.Errorf("record %d (%s): %v", i, w.Sig, err)
		}
		s.Quality = q
	}
	return out, nil
}

func decodeFeatures(data []byte) ([]Feature, error) {
	var ws []wireFeature
	if err := json.Unmarshal(data, &ws); err != nil {
		return nil, err
	}
	out := make([]Feature, len(ws))
	for i := range ws {
		w := &ws[i]
		out[i] = Feature{Signal: w.Sig, Name: w.Name, WindowStart: w.Start.t, WindowEnd: w.End.t,
			Value: float64(w.V), Count: w.N, Partial: w.Partial, Labels: Labels(w.Lbl)}
	}
	return out, nil
}

// wireTime reads an RFC 3339 timestamp or null.
type wireTime struct{ t time.Time }

func (w *wireTime) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		w.t = time.Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("time: %v", err)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("time: %v", err)
	}
	w.t = t.UTC()
	return nil
}

// wireFloat reads a JSON number or one of the strings "NaN", "Inf", "-Inf".
type wireFloat float64

func (w *wireFloat) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		switch s {
		case "NaN":
			*w = wireFloat(math.NaN())
		case "Inf":
			*w = wireFloat(math.Inf(1))
		case "-Inf":
			*w = wireFloat(math.Inf(-1))
		default:
			return fmt.Errorf("float: unexpected string %q", s)
		}
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("float: %v", err)
	}
	*w = wireFloat(f)
	return nil
}

// wireLabels reads a JSON object of strings, keeping the order in which keys appear.
type wireLabels Labels

func (w *wireLabels) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*w = nil
		return nil
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("labels: %v", err)
	}
	if len(m) == 0 { // {} reads as no labels, as the encoder writes no labels
		*w = nil
		return nil
	}
	// Recover the key order from the document (json.Unmarshal has validated it already).
	dec := json.NewDecoder(bytes.NewReader(b))
	out := make(Labels, 0, len(m))
	seen := make(map[string]bool, len(m))
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("labels: %v", err)
	}
	for dec.More() {
		tk, err := dec.Token()
		if err != nil {
			return fmt.Errorf("labels: %v", err)
		}
		k, _ := tk.(string)
		if _, err := dec.Token(); err != nil {
			return fmt.Errorf("labels: %v", err)
		}
		if !seen[k] { // a repeated key keeps its last value, as in the map, at its first position
			seen[k] = true
			out = append(out, Label{Key: k, Value: m[k]})
		}
	}
	if len(out) != len(m) { // defensive: should not happen
		out = out[:0]
		for k, v := range m {
			out = append(out, Label{Key: k, Value: v})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	}
	*w = wireLabels(out)
	return nil
}
