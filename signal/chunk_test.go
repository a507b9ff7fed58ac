package signal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestChunkRoundTrip(t *testing.T) {
	recs := AppendSamplesJSON(nil, []Sample{{Signal: "a", Time: t0, Value: Float(1)}, {Signal: "b", Value: Int(2)}})
	cases := []struct {
		name string
		c    Chunk
		want func(*Chunk)
	}{
		{"samples", Chunk{Stream: StreamSamples, ConfigVersion: "cfg-1", Count: 2, Oldest: t0, Newest: t0.Add(time.Second),
			Captured: t0.Add(time.Hour), Records: recs}, nil},
		{"features empty", Chunk{Stream: StreamFeatures, Records: []byte("[]")}, nil},
		{"status", Chunk{Stream: StreamStatus, Count: 1, Oldest: t0, Newest: t0, Records: AppendStatusJSON(nil, []Status{{Time: t0}})}, nil},
		{"unicode config version", Chunk{Stream: StreamSamples, ConfigVersion: "версия\x00", Records: []byte("[]")}, nil},
		{"times before 1970", Chunk{Stream: StreamSamples, Oldest: time.Date(1900, 1, 1, 0, 0, 0, 1, time.UTC),
			Newest: time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC), Records: []byte("[]")}, nil},
		{"local times read as UTC", Chunk{Stream: StreamSamples, Oldest: time.Now(),
			Newest: t0.In(time.FixedZone("X", 7200)), Records: []byte("[]")}, nil},
		// Chunk times are Unix nanoseconds, with 0 meaning "no time": the epoch itself reads back as zero.
		{"unix epoch reads as zero", Chunk{Stream: StreamSamples, Oldest: time.Unix(0, 0), Records: []byte("[]")},
			func(c *Chunk) { c.Oldest = time.Time{} }},
		{"times outside the Unix nanosecond range clamp", Chunk{Stream: StreamSamples,
			Oldest: time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), Newest: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC),
			Records: []byte("[]")}, func(c *Chunk) {
			c.Oldest, c.Newest = time.Unix(0, math.MinInt64).UTC(), time.Unix(0, math.MaxInt64).UTC()
		}},
		{"large count", Chunk{Stream: StreamSamples, Count: 1 << 20, Records: bytes.Repeat([]byte("["), 1<<20+1)[:0]}, nil},
	}
	cases[len(cases)-1].c.Records = append(append([]byte("["), bytes.Repeat([]byte(" "), 1<<20)...), ']')
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := c.c
			if c.want != nil {
				c.want(&want)
			}
			data := AppendChunk([]byte("prefix"), &c.c)
			if !bytes.HasPrefix(data, []byte("prefix")) {
				t.Fatal("AppendChunk did not append")
			}
			got, err := ParseChunk(data[len("prefix"):])
			if err != nil {
				t.Fatal(err)
			}
			sameTimeOrZero(t, "oldest", got.Oldest, want.Oldest)
			sameTimeOrZero(t, "newest", got.Newest, want.Newest)
			sameTimeOrZero(t, "captured", got.Captured, want.Captured)
			if got.Stream != want.Stream || got.ConfigVersion != want.ConfigVersion || got.Count != want.Count ||
				!bytes.Equal(got.Records, want.Records) {
				t.Fatalf("got %+v, want %+v", got, want)
			}
		})
	}
}

func sameTimeOrZero(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if want.IsZero() {
		if !got.IsZero() || got != (time.Time{}) {
			t.Errorf("%s: got %v, want the zero time", what, got)
		}
		return
	}
	sameTime(t, what, got, want)
}

// TestChunkVersion1StillReads: a buffer written by an agent before capture times (chunk version 1)
// is forwarded by a newer one, with the newest record time standing in for the capture time.
func TestChunkVersion1StillReads(t *testing.T) {
	v1 := []byte{'g', 1, byte(StreamSamples)}
	v1 = binary.AppendUvarint(v1, 1)
	v1 = binary.AppendVarint(v1, t0.UnixNano())
	v1 = binary.AppendVarint(v1, t0.Add(time.Second).UnixNano())
	v1 = binary.AppendUvarint(v1, 3)
	v1 = append(v1, "cv1"...)
	v1 = append(v1, `[{"sig":"a","ts":null}]`...)
	c, err := ParseChunk(v1)
	if err != nil {
		t.Fatal(err)
	}
	if c.ConfigVersion != "cv1" || c.Count != 1 || string(c.Records) != `[{"sig":"a","ts":null}]` || !c.Captured.IsZero() {
		t.Fatalf("version 1 chunk read as %+v", c)
	}
	sameTime(t, "capture time of a version 1 chunk", c.CaptureTime(), t0.Add(time.Second))
	now := Chunk{Stream: StreamSamples, Newest: t0, Captured: t0.Add(time.Minute), Records: []byte("[]")}
	again, err := ParseChunk(AppendChunk(nil, &now))
	if err != nil {
		t.Fatal(err)
	}
	sameTime(t, "capture time of a version 2 chunk", again.CaptureTime(), t0.Add(time.Minute))
}

func TestChunkRecordsAliasData(t *testing.T) {
	data := AppendChunk(nil, &Chunk{Stream: StreamSamples, Records: []byte(`[{"sig":"a"}]`)})
	c, err := ParseChunk(data)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-4] = 'b'
	if string(c.Records) != `[{"sig":"b"}]` {
		t.Fatalf("Records is a copy (%s); the contract says it aliases the input", c.Records)
	}
}

func TestParseChunkMalformed(t *testing.T) {
	good := AppendChunk(nil, &Chunk{Stream: StreamFeatures, ConfigVersion: "cfg", Count: 1, Oldest: t0,
		Newest: t0, Records: []byte(`[{"sig":"a","name":"mean"}]`)})
	// Every strict prefix of a chunk is rejected (the records end with the only ']').
	for n := range len(good) {
		if c, err := ParseChunk(good[:n]); err == nil || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("prefix of %d bytes: %+v, %v", n, c, err)
		}
	}
	mutate := func(f func([]byte) []byte) []byte { return f(bytes.Clone(good)) }
	header := func(stream byte, fields ...[]byte) []byte {
		out := []byte{'g', 1, stream}
		for _, f := range fields {
			out = append(out, f...)
		}
		return out
	}
	uv := func(v uint64) []byte { return binary.AppendUvarint(nil, v) }
	sv := func(v int64) []byte { return binary.AppendVarint(nil, v) }
	overflow := bytes.Repeat([]byte{0xff}, 10)
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"nil", nil, "not a chunk"},
		{"json", []byte(`[{"sig":"a"}]`), "not a chunk"},
		{"bad magic", mutate(func(b []byte) []byte { b[0] = 'G'; return b }), "not a chunk"},
		{"newer version", mutate(func(b []byte) []byte { b[1] = 3; return b }), "chunk version 3 unsupported"},
		{"version 2 without capture time", []byte{'g', 2, 0, 0, 0, 0}, "bad chunk capture time"},
		{"unknown stream", mutate(func(b []byte) []byte { b[2] = byte(NumStreams); return b }), "unknown stream 3"},
		{"count overflow", header(0, overflow), "bad chunk count"},
		{"count beyond data", header(0, uv(1000), sv(0), sv(0), uv(0), []byte("[]")), "bad chunk count"},
		{"count max", header(0, uv(math.MaxUint64)), "bad chunk count"},
		{"oldest overflow", header(0, uv(0), overflow), "bad chunk time"},
		{"newest missing", header(0, uv(0), sv(5)), "bad chunk time"},
		{"config version too long", header(0, uv(0), sv(0), sv(0), uv(100), []byte("[]")), "bad chunk config version"},
		{"config version length overflow", header(0, uv(0), sv(0), sv(0), overflow), "bad chunk config version"},
		{"config version max length", header(0, uv(0), sv(0), sv(0), uv(math.MaxUint64), []byte("[]")), "bad chunk config version"},
		{"records missing", header(0, uv(0), sv(0), sv(0), uv(0)), "not a JSON array"},
		{"records object", header(0, uv(0), sv(0), sv(0), uv(0), []byte("{}")), "not a JSON array"},
		{"records unterminated", header(0, uv(0), sv(0), sv(0), uv(0), []byte("[{}")), "not a JSON array"},
		{"records one byte", header(0, uv(0), sv(0), sv(0), uv(0), []byte("[")), "not a JSON array"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseChunk(c.data)
			if err == nil {
				t.Fatalf("accepted %q as %+v", c.data, got)
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want ErrCorrupt mentioning %q", err, c.want)
			}
		})
	}
}
