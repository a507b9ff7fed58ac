package signal

import (
	"encoding/json"
	"testing"
	"time"
)

// typicalSamples builds n samples shaped like a press line's traffic: mostly floats from OPC UA, some
// counters, states and SKUs, one label on MQTT-sourced samples, an occasional Uncertain reading.
func typicalSamples(n int) []Sample {
	base := time.Date(2026, 11, 24, 21, 9, 43, 123456789, time.UTC)
	out := make([]Sample, n)
	for i := range out {
		s := Sample{
			Signal: "line1.press.temperature",
			Time:   base.Add(time.Duration(i) * 100 * time.Millisecond),
			Value:  Float(71.25 + float64(i)*0.125),
			Source: "opcua-press/ns=2;s=Temperature",
		}
		switch i % 10 {
		case 7:
			s.Signal, s.Value, s.Source = "line1.press.parts", Int(int64(120000+i)), "opcua-press/ns=2;s=PartCount"
		case 8:
			s.Signal, s.Value, s.Source = "line1.press.running", Bool(i%20 == 8), "opcua-press/ns=2;s=Running"
		case 9:
			s.Signal, s.Value, s.Source = "line1.oven.sku", String("SKU-4711"), "mqtt-line1/plant1/line1/oven/telemetry"
			s.Labels = Labels{{Key: "machine", Value: "oven"}}
		case 3:
			s.Quality, s.Reason = Uncertain, "UncertainLastUsableValue"
		}
		out[i] = s
	}
	return out
}

// jsonSample is the same data shaped for encoding/json, the baseline the hand-written encoder is
// measured against. It produces the same field names, so the byte counts are comparable.
type jsonSample struct {
	Sig string            `json:"sig"`
	TS  time.Time         `json:"ts"`
	F   *float64          `json:"f,omitempty"`
	I   *int64            `json:"i,omitempty"`
	B   *bool             `json:"b,omitempty"`
	S   *string           `json:"s,omitempty"`
	Q   string            `json:"q,omitempty"`
	R   string            `json:"r,omitempty"`
	Src string            `json:"src,omitempty"`
	Lbl map[string]string `json:"lbl,omitempty"`
}

func toJSONSamples(in []Sample) []jsonSample {
	out := make([]jsonSample, len(in))
	for i, s := range in {
		j := jsonSample{Sig: s.Signal, TS: s.Time, R: s.Reason, Src: s.Source}
		if s.Quality != Good {
			j.Q = s.Quality.String()
		}
		switch s.Value.Kind() {
		case KindFloat:
			f, _ := s.Value.Float()
			j.F = &f
		case KindInt:
			v, _ := s.Value.Int()
			j.I = &v
		case KindBool:
			v, _ := s.Value.Bool()
			j.B = &v
		case KindString:
			v, _ := s.Value.Str()
			j.S = &v
		}
		if len(s.Labels) > 0 {
			j.Lbl = make(map[string]string, len(s.Labels))
			for _, l := range s.Labels {
				j.Lbl[l.Key] = l.Value
			}
		}
		out[i] = j
	}
	return out
}

const benchBatch = 100

func reportPerSample(b *testing.B, n int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/sample")
}

// BenchmarkEncode compares the agent's encoder with encoding/json on the same 100 samples.
func BenchmarkEncode(b *testing.B) {
	samples := typicalSamples(benchBatch)
	b.Run("signal", func(b *testing.B) {
		buf := AppendSamplesJSON(nil, samples)
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			buf = AppendSamplesJSON(buf[:0], samples)
		}
		reportPerSample(b, len(samples))
	})
	b.Run("encoding_json", func(b *testing.B) {
		js := toJSONSamples(samples)
		out, err := json.Marshal(js)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(out)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(js); err != nil {
				b.Fatal(err)
			}
		}
		reportPerSample(b, len(samples))
	})
}

// BenchmarkEnvelope measures what the uplink pays per message: parse the buffered chunk and wrap its
// records in an envelope (no re-encoding of records).
func BenchmarkEnvelope(b *testing.B) {
	samples := typicalSamples(benchBatch)
	data := AppendChunk(nil, &Chunk{Stream: StreamSamples, Count: len(samples), Oldest: samples[0].Time,
		Newest: samples[len(samples)-1].Time, Records: AppendSamplesJSON(nil, samples)})
	h := benchHeader(len(samples))
	var out []byte
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		c, err := ParseChunk(data)
		if err != nil {
			b.Fatal(err)
		}
		out = AppendEnvelope(out[:0], &h, c.Records)
	}
	reportPerSample(b, len(samples))
}

// BenchmarkDecode measures what a consumer pays per sample to decode a whole published batch.
func BenchmarkDecode(b *testing.B) {
	samples := typicalSamples(benchBatch)
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"batch", AppendBatch(nil, &Batch{Header: benchHeader(len(samples)), Samples: samples})},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.data)))
			b.ReportAllocs()
			for b.Loop() {
				got, err := DecodeBatch(c.data)
				if err != nil || len(got.Samples) != len(samples) {
					b.Fatal(err)
				}
			}
			reportPerSample(b, len(samples))
		})
		// The general decoder, which every input outside the encoder's exact form takes.
		b.Run(c.name+"_general", func(b *testing.B) {
			b.SetBytes(int64(len(c.data)))
			b.ReportAllocs()
			for b.Loop() {
				got, err := decodeBatchJSON(c.data)
				if err != nil || len(got.Samples) != len(samples) {
					b.Fatal(err)
				}
			}
			reportPerSample(b, len(samples))
		})
	}
	b.Run("encoding_json", func(b *testing.B) {
		data, err := json.Marshal(toJSONSamples(samples))
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			var out []jsonSample
			if err := json.Unmarshal(data, &out); err != nil || len(out) != len(samples) {
				b.Fatal(err)
			}
		}
		reportPerSample(b, len(samples))
	})
}

func benchHeader(n int) Header {
	t := time.Date(2026, 11, 24, 21, 9, 43, 0, time.UTC)
	return Header{Schema: SchemaVersion, Agent: "gw-line1", Site: "plant1", Incarnation: "5be1c0de2f6a9d31", Stream: StreamSamples,
		ConfigVersion: "c0ffee12", FirstSeq: 4711, LastSeq: 4711, Count: n, Oldest: t, Newest: t.Add(10 * time.Second),
		Sent: t.Add(11 * time.Second)}
}
