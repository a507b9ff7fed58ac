package buffer

import (
	"context"
	"errors"
	"testing"

	"github.com/gemba-io/gemba/signal"
)

// AppendMeta stores its meta keys with the records, readable with GetMeta and across a reopen;
// when the records are refused the meta is not written either.
func TestAppendMeta(t *testing.T) {
	cfg := capConfig(t, DropNewest)
	s, err := Open(cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	seqs, err := s.AppendMeta(ctx, signal.StreamSamples, []Meta{{Key: "k1", Value: []byte("v1")}, {Key: "k2", Value: []byte("v2")}}, rec("a"), rec("b"))
	if err != nil || len(seqs) != 2 {
		t.Fatalf("AppendMeta = %v, %v", seqs, err)
	}
	if got := readAll(t, s, signal.StreamSamples); len(got) != 2 {
		t.Fatalf("meta leaked into the queue or records missing: %d records", len(got))
	}
	// Fill the store until drop_newest refuses: the refused append's meta must not be written.
	refused := false
	for i := 0; i < 400 && !refused; i++ {
		_, err := s.AppendMeta(ctx, signal.StreamSamples, []Meta{{Key: "k3", Value: []byte{byte(i)}}}, bigRec(i))
		switch {
		case errors.Is(err, ErrFull):
			refused = true
		case err != nil:
			t.Fatalf("append %d: %v", i, err)
		}
	}
	if !refused {
		t.Fatal("the store never refused an append")
	}
	last, ok, err := s.GetMeta("k3")
	if err != nil || !ok {
		t.Fatalf("k3: %v %v", ok, err)
	}
	accepted := s.Stats().Streams[signal.StreamSamples].Records - 2
	if uint64(last[0]) != accepted-1 {
		t.Errorf("k3 = %d after %d accepted appends: the refused append wrote its meta", last[0], accepted)
	}
	if _, err := s.AppendMeta(ctx, signal.StreamSamples, []Meta{{Key: "x", Value: nil}}); err == nil {
		t.Error("meta without records accepted")
	}
	if _, err := s.AppendMeta(ctx, signal.StreamSamples, []Meta{{Value: []byte("v")}}, rec("c")); err == nil {
		t.Error("empty meta key accepted")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for k, want := range map[string]string{"k1": "v1", "k2": "v2"} {
		if v, ok, err := s.GetMeta(k); err != nil || !ok || string(v) != want {
			t.Errorf("after reopen %s = %q %v %v, want %q", k, v, ok, err, want)
		}
	}
}
