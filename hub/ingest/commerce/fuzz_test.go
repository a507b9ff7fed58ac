package commerce

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// checkDecodeErr: a refusal is a *FieldError with a bounded message, whatever the input.
func checkDecodeErr(t *testing.T, err error) {
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %T %v is not a *FieldError", err, err)
	}
	if len(err.Error()) > 1024 {
		t.Fatalf("error of %d bytes: messages must clip the input", len(err.Error()))
	}
}

func FuzzDecodeSale(f *testing.F) {
	f.Add("gemba.commerce.sales.web", []byte(goodSale))
	f.Add("", []byte(with(goodSale, "quantity", "-1e-3")))
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		s, err := DecodeSale(subject, data)
		if err != nil {
			checkDecodeErr(t, err)
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("decoded an invalid sale %+v: %v", s, err)
		}
		if ch, ok := ChannelOf(subject); subject != "" && (!ok || ch != s.Channel) {
			t.Fatalf("sale on channel %q accepted from subject %q", s.Channel, subject)
		}
		enc, err := EncodeSale(s)
		if err != nil {
			t.Fatalf("decoded sale does not encode: %v", err)
		}
		back, err := DecodeSale(SalesSubject("gemba", s.Channel), enc)
		if err != nil {
			t.Fatalf("encoded sale %s does not decode: %v", enc, err)
		}
		if !back.Time.Equal(s.Time) || back.MsgID() != s.MsgID() {
			t.Fatalf("round trip changed %+v into %+v", s, back)
		}
		back.Time = s.Time
		if back != s {
			t.Fatalf("round trip changed %+v into %+v", s, back)
		}
	})
}

func FuzzDecodeSnapshot(f *testing.F) {
	f.Add([]byte(goodSnap))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeSnapshot(data)
		if err != nil {
			checkDecodeErr(t, err)
			return
		}
		enc, err := EncodeSnapshot(s)
		if err != nil {
			t.Fatalf("decoded snapshot %+v does not encode: %v", s, err)
		}
		back, err := DecodeSnapshot(enc)
		if err != nil || !back.Time.Equal(s.Time) || back.MsgID() != s.MsgID() || back.OnHand != s.OnHand {
			t.Fatalf("round trip of %+v: %+v, %v", s, back, err)
		}
		if strings.Count(s.MsgID(), ":") != 3 || !utf8.ValidString(s.MsgID()) {
			t.Fatalf("identity %q is not four clean parts", s.MsgID())
		}
	})
}

// recordPublisher stands in for JetStream: the importer's logic is what is fuzzed here (the
// publisher is exercised against a real server in TestImportInventory).
type recordPublisher struct{ events []Event }

func (p *recordPublisher) Publish(_ context.Context, events []Event) []Result {
	p.events = append(p.events, events...)
	out := make([]Result, len(events))
	for i, ev := range events {
		out[i].ID = ev.MsgID()
		if _, err := ev.encode(); err != nil {
			out[i].Err = err
		}
	}
	return out
}

func FuzzImportCSV(f *testing.F) {
	f.Add([]byte("sku,site,on_hand,time\nA,p,1,2026-12-04T06:00:00Z\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pub := &recordPublisher{}
		rep, err := ImportInventory(context.Background(), pub, bytes.NewReader(data), ImportOptions{Name: "fuzz.csv", MaxBytes: 1 << 20})
		if err != nil {
			if len(pub.events) > 0 {
				t.Fatalf("import failed (%v) after publishing %d rows", err, len(pub.events))
			}
			if !strings.HasPrefix(err.Error(), "fuzz.csv") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if rep.Published != len(pub.events) || rep.Failed != 0 {
			t.Fatalf("report %+v for %d published rows (a row that does not encode was let through)", rep, len(pub.events))
		}
		errs := len(rep.Errors)
		stopped := errs > 0 && rep.Errors[errs-1].Line == 0 && strings.Contains(rep.Errors[errs-1].Error(), "stopped after")
		if stopped {
			errs--
		}
		if !stopped && rep.Rows != rep.Published+errs {
			t.Fatalf("%d rows read, %d published, %d errors", rep.Rows, rep.Published, errs)
		}
		seen := map[string]bool{}
		for _, ev := range pub.events {
			if seen[ev.MsgID()] {
				t.Fatalf("row %s published twice", ev.MsgID())
			}
			seen[ev.MsgID()] = true
		}
		for _, e := range rep.Errors[:errs] {
			if e.Line < 2 {
				t.Fatalf("row error %v: rows start on line 2", e)
			}
		}
	})
}
