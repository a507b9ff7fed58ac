package features

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go"

	"github.com/gemba-io/gemba/internal/natstest"
)

// A flush is written compressed, and read back by another replica; a log holding plain messages
// (as written before the encoding header) still loads; a message that cannot be unpacked is
// skipped, counted and logged, and the values around it load.
func TestLogEncodings(t *testing.T) {
	n := natstest.JetStream(t)
	a := open(t, n.URL())
	var ins []Input
	for k := range 200 {
		ins = append(ins, in(feat("line1.pack.parts", "units", t0, float64(k), "sku", fmt.Sprint("S", k)), uint64(k+1)))
	}
	a.Apply(ins)
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	st, err := js.Stream(ctx, "F")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if raw.Header.Get(encodingHeader) != encodingS2 {
		t.Fatalf("flush written with %s %q, want s2", encodingHeader, raw.Header.Get(encodingHeader))
	}
	lines, err := LogLines(raw.Header, raw.Data)
	if err != nil {
		t.Fatal(err)
	}
	if got := bytes.Count(lines, []byte{'\n'}); got != 200 || len(raw.Data)*3 > len(lines) {
		t.Fatalf("%d lines in %d bytes packed into %d: want 200 lines, packed to under a third", got, len(lines), len(raw.Data))
	}
	// A reader reuses its buffer: the same message read twice gives the same lines.
	var lr LogReader
	first, err := lr.Lines(raw.Header, raw.Data)
	if err != nil || !bytes.Equal(first, lines) {
		t.Fatalf("reader: %v, equal %v", err, bytes.Equal(first, lines))
	}
	if again, err := lr.Lines(raw.Header, raw.Data); err != nil || !bytes.Equal(again, lines) || &again[0] != &first[0] {
		t.Fatalf("reader again: %v, equal %v, same buffer %v", err, bytes.Equal(again, lines), &again[0] == &first[0])
	}

	// A plain message, as written before the header; then a corrupt s2 one and an unknown encoding.
	plain, _ := encodeValue(&Value{Name: "units", Key: "P", Value: 7, WindowStart: t0, WindowEnd: t0, Lineage: Lineage{Agent: "gw1", StreamSeq: 9000}})
	pub := func(data []byte, enc string) {
		t.Helper()
		m := nats.NewMsg(a.subj + "d")
		m.Data = data
		if enc != "" {
			m.Header.Set(encodingHeader, enc)
		}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	pub(append(plain, '\n'), "")
	pub([]byte("not s2 at all"), encodingS2)
	pub(s2.Encode(nil, append(plain, '\n')), "zstd")
	pub(s2.Encode(nil, make([]byte, maxMessage+1)), encodingS2) // more than a log message once unpacked

	b := open(t, n.URL())
	for k := range 200 {
		if v, ok := b.Get("units", fmt.Sprint("S", k)); !ok || v.Value.Value != float64(k) {
			t.Fatalf("S%d: %+v, %v", k, v, ok)
		}
	}
	if v, ok := b.Get("units", "P"); !ok || v.Value.Value != 7 {
		t.Errorf("the plain message's value: %+v, %v", v, ok)
	}
	if got := b.Stats.Unreadable.Load(); got != 3 {
		t.Errorf("%d unreadable, want 3 (corrupt, unknown encoding, too large)", got)
	}
	if _, err := LogLines(nats.Header{encodingHeader: []string{"zstd"}}, nil); err == nil {
		t.Error("an unknown encoding read")
	}
}
