package commerce

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/state/inventory"
)

const goodSale = `{"schema":1,"order_id":"A-1001","line":1,"sku":"SKU-1","site":"plant1","channel":"web","quantity":2,"unit_price":9.5,"currency":"EUR","time":"2026-12-04T10:00:00Z"}`
const goodSnap = `{"schema":1,"snapshot_id":"erp-2026-12-04","sku":"SKU-1","site":"plant1","on_hand":120,"time":"2026-12-04T06:00:00+01:00"}`

// with replaces `"field":<old value>` in a good event (or removes the field when v is "").
func with(event, field, v string) string {
	i := strings.Index(event, `"`+field+`":`)
	if i < 0 {
		panic(field)
	}
	j := i + len(field) + 3
	depth, inStr := 0, false
	for ; j < len(event); j++ {
		c := event[j]
		switch {
		case inStr && c == '\\':
			j++
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '[' || c == '{':
			depth++
		case (c == ',' || c == '}') && depth == 0:
			goto done
		case c == ']' || c == '}':
			depth--
		}
	}
done:
	if v == "" {
		if event[j] == ',' {
			j++
		} else if event[i-1] == ',' {
			i--
		}
		return event[:i] + event[j:]
	}
	return event[:i] + `"` + field + `":` + v + event[j:]
}

func TestDecodeSale(t *testing.T) {
	s, err := DecodeSale("gemba.commerce.sales.web", []byte(goodSale))
	if err != nil {
		t.Fatal(err)
	}
	want := Sale{OrderID: "A-1001", Line: 1, SKU: "SKU-1", Site: "plant1", Channel: "web", Quantity: 2, UnitPrice: 9.5, Currency: "EUR",
		Time: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	if !s.Time.Equal(want.Time) {
		t.Fatalf("time %v, want %v", s.Time, want.Time)
	}
	s.Time = want.Time
	if s != want {
		t.Fatalf("decoded %+v, want %+v", s, want)
	}
	if got := s.MsgID(); got != "sale:A-1001:1" {
		t.Fatalf("MsgID %q", got)
	}
	// A return, an integral float, an unknown field (ignored: forward compatibility), a prefix with dots.
	ret := with(with(with(goodSale, "quantity", "-1.5"), "line", "2.0"), "schema", `1,"coupon":{"code":"X"}`)
	s, err = DecodeSale("acme.gemba.commerce.sales.web", []byte(ret))
	if err != nil {
		t.Fatal(err)
	}
	if !s.IsReturn() || s.Quantity != -1.5 || s.Line != 2 {
		t.Fatalf("return decoded as %+v", s)
	}
	// No subject (HTTP): the channel is not checked against one.
	if _, err := DecodeSale("", []byte(with(goodSale, "channel", `"retail"`))); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeSaleErrors(t *testing.T) {
	long := strings.Repeat("x", MaxTokenLen+1)
	cases := []struct {
		name, subject, data, field, msg string
	}{
		{"empty", "", ``, "", "invalid JSON"},
		{"not JSON", "", `{"schema":1,`, "", "invalid JSON"},
		{"array", "", `[` + goodSale + `]`, "", "must be a JSON object, got an array"},
		{"string", "", `"sale"`, "", "must be a JSON object, got a string"},
		{"trailing data", "", goodSale + `{}`, "", "unexpected data after"},
		{"trailing brace", "", goodSale + `}`, "", "unexpected data after"},
		{"duplicate key", "", with(goodSale, "sku", `"A","sku":"B"`), "sku", "appears twice"},
		{"schema missing", "", with(goodSale, "schema", ""), "schema", "missing"},
		{"schema 2", "", with(goodSale, "schema", "2"), "schema", "version 2 is not supported"},
		{"schema string", "", with(goodSale, "schema", `"1"`), "schema", "must be an integer"},
		{"schema fraction", "", with(goodSale, "schema", `1.5`), "schema", "must be an integer"},
		{"order_id missing", "", with(goodSale, "order_id", ""), "order_id", "missing"},
		{"order_id null", "", with(goodSale, "order_id", "null"), "order_id", "missing"},
		{"order_id empty", "", with(goodSale, "order_id", `""`), "order_id", "must not be empty"},
		{"order_id number", "", with(goodSale, "order_id", `1001`), "order_id", "must be a string"},
		{"order_id dot", "", with(goodSale, "order_id", `"A.1"`), "order_id", "cannot appear in a NATS subject token"},
		{"order_id colon", "", with(goodSale, "order_id", `"A:1"`), "order_id", "cannot appear in an id"},
		{"order_id space", "", with(goodSale, "order_id", `"A 1"`), "order_id", "cannot appear"},
		{"order_id control", "", with(goodSale, "order_id", `"A\u0001"`), "order_id", "cannot appear in an id"},
		{"order_id too long", "", with(goodSale, "order_id", `"`+long+`"`), "order_id", "at most 128"},
		{"line missing", "", with(goodSale, "line", ""), "line", "missing"},
		{"line zero", "", with(goodSale, "line", "0"), "line", "between 1 and"},
		{"line negative", "", with(goodSale, "line", "-1"), "line", "between 1 and"},
		{"line fraction", "", with(goodSale, "line", "1.5"), "line", "must be an integer"},
		{"line huge", "", with(goodSale, "line", "1e30"), "line", "between 1 and"},
		{"line string", "", with(goodSale, "line", `"1"`), "line", "must be an integer"},
		{"sku missing", "", with(goodSale, "sku", ""), "sku", "missing"},
		{"sku wildcard", "", with(goodSale, "sku", `"SKU*"`), "sku", "cannot appear"},
		{"site missing", "", with(goodSale, "site", ""), "site", "missing"},
		{"site gt", "", with(goodSale, "site", `"a>b"`), "site", "cannot appear"},
		{"channel missing", "", with(goodSale, "channel", ""), "channel", "missing"},
		{"channel tab", "", with(goodSale, "channel", `"w\teb"`), "channel", "cannot appear"},
		{"channel vs subject", "gemba.commerce.sales.retail", goodSale, "channel", `differs from the subject's channel "retail"`},
		{"bad subject", "gemba.commerce.inventory", goodSale, "", "is not <prefix>.commerce.sales.<channel>"},
		{"quantity missing", "", with(goodSale, "quantity", ""), "quantity", "missing"},
		{"quantity zero", "", with(goodSale, "quantity", "0"), "quantity", "must not be 0"},
		{"quantity string", "", with(goodSale, "quantity", `"2"`), "quantity", "must be a number"},
		{"quantity overflow", "", with(goodSale, "quantity", "1e400"), "quantity", "out of range"},
		{"quantity NaN", "", with(goodSale, "quantity", "NaN"), "quantity", "invalid JSON"},
		{"time zero", "", with(goodSale, "time", `"0001-01-01T00:00:00Z"`), "time", "must be set"},
		{"unit_price missing", "", with(goodSale, "unit_price", ""), "unit_price", "missing"},
		{"unit_price negative", "", with(goodSale, "unit_price", "-1"), "unit_price", "≥ 0"},
		{"unit_price overflow", "", with(goodSale, "unit_price", "-1e999"), "unit_price", "out of range"},
		{"currency missing", "", with(goodSale, "currency", ""), "currency", "missing"},
		{"currency lower", "", with(goodSale, "currency", `"eur"`), "currency", "ISO 4217"},
		{"currency long", "", with(goodSale, "currency", `"EURO"`), "currency", "ISO 4217"},
		{"time missing", "", with(goodSale, "time", ""), "time", "missing"},
		{"time no zone", "", with(goodSale, "time", `"2026-12-04T10:00:00"`), "time", "RFC 3339"},
		{"time date only", "", with(goodSale, "time", `"2026-12-04"`), "time", "RFC 3339"},
		{"time number", "", with(goodSale, "time", `1764842400`), "time", "must be a string"},
		{"time year 0", "", with(goodSale, "time", `"0000-01-01T00:00:00Z"`), "time", "between 1678-01-01 and 2261-12-31"},
		{"time before 1678", "", with(goodSale, "time", `"1677-12-31T23:59:59Z"`), "time", "between 1678-01-01 and 2261-12-31"},
		{"time after 2261", "", with(goodSale, "time", `"2261-12-31T00:00:00.000000001Z"`), "time", "between 1678-01-01 and 2261-12-31"},
		{"quantity beyond 1e15", "", with(goodSale, "quantity", "1e16"), "quantity", "within"},
		{"sku over 256 bytes", "", with(goodSale, "sku", `"`+strings.Repeat("品", 100)+`"`), "sku", "300 bytes long"},
		{"time bad day", "", with(goodSale, "time", `"2026-02-30T00:00:00Z"`), "time", "RFC 3339"},
		{"long unknown key", "", `{"` + strings.Repeat("k", 60000) + `":tru}`, strings.Repeat("k", 64) + "…", "invalid JSON"},
		{"too big", "", with(goodSale, "schema", `1,"pad":"`+strings.Repeat("x", MaxEventSize)+`"`), "", "at most"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeSale(c.subject, []byte(c.data))
			if err == nil {
				t.Fatalf("accepted %s", clipStr(c.data))
			}
			if got := Field(err); got != c.field {
				t.Errorf("field %q, want %q (%v)", got, c.field, err)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q does not say %q", err, c.msg)
			}
		})
	}
}

func TestDecodeSnapshotErrors(t *testing.T) {
	if s, err := DecodeSnapshot([]byte(goodSnap)); err != nil || s.OnHand != 120 || s.MsgID() != "inv:erp-2026-12-04:plant1:SKU-1" ||
		!s.Time.Equal(time.Date(2026, 12, 4, 5, 0, 0, 0, time.UTC)) {
		t.Fatalf("decoded %+v, %v", s, err)
	}
	if s, err := DecodeSnapshot([]byte(with(goodSnap, "on_hand", "-3"))); err != nil || s.OnHand != -3 {
		t.Fatalf("negative on_hand (book stock): %+v, %v", s, err)
	}
	cases := []struct{ name, data, field, msg string }{
		{"not object", `[]`, "", "must be a JSON object"},
		{"schema 0", with(goodSnap, "schema", "0"), "schema", "version 0"},
		{"snapshot_id missing", with(goodSnap, "snapshot_id", ""), "snapshot_id", "missing"},
		{"snapshot_id colon", with(goodSnap, "snapshot_id", `"a:b"`), "snapshot_id", "cannot appear in an id"},
		{"sku empty", with(goodSnap, "sku", `""`), "sku", "must not be empty"},
		{"site dot", with(goodSnap, "site", `"plant.1"`), "site", "cannot appear"},
		{"on_hand missing", with(goodSnap, "on_hand", ""), "on_hand", "missing"},
		{"on_hand bool", with(goodSnap, "on_hand", "true"), "on_hand", "must be a number"},
		{"on_hand overflow", with(goodSnap, "on_hand", "2e308"), "on_hand", "out of range"},
		{"time bad", with(goodSnap, "time", `"yesterday"`), "time", "RFC 3339"},
		{"duplicate key", with(goodSnap, "on_hand", `1,"on_hand":2`), "on_hand", "appears twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeSnapshot([]byte(c.data))
			if err == nil {
				t.Fatalf("accepted %s", c.data)
			}
			if got := Field(err); got != c.field {
				t.Errorf("field %q, want %q (%v)", got, c.field, err)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q does not say %q", err, c.msg)
			}
		})
	}
}

func TestEncodeRefusesInvalid(t *testing.T) {
	cases := map[string]struct {
		ev    Event
		field string
	}{
		"NaN quantity":   {Sale{OrderID: "o", Line: 1, SKU: "s", Site: "p", Channel: "c", Quantity: math.NaN(), Currency: "EUR", Time: t0}, "quantity"},
		"Inf price":      {Sale{OrderID: "o", Line: 1, SKU: "s", Site: "p", Channel: "c", Quantity: 1, UnitPrice: math.Inf(1), Currency: "EUR", Time: t0}, "unit_price"},
		"zero time":      {Sale{OrderID: "o", Line: 1, SKU: "s", Site: "p", Channel: "c", Quantity: 1, Currency: "EUR"}, "time"},
		"year 10000":     {Snapshot{SnapshotID: "x", SKU: "s", Site: "p", Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, "time"},
		"bad utf8":       {Snapshot{SnapshotID: "x\xff", SKU: "s", Site: "p", Time: t0}, "snapshot_id"},
		"-Inf on hand":   {Snapshot{SnapshotID: "x", SKU: "s", Site: "p", OnHand: math.Inf(-1), Time: t0}, "on_hand"},
		"line 0":         {Sale{OrderID: "o", SKU: "s", Site: "p", Channel: "c", Quantity: 1, Currency: "EUR", Time: t0}, "line"},
		"empty currency": {Sale{OrderID: "o", Line: 1, SKU: "s", Site: "p", Channel: "c", Quantity: 1, Time: t0}, "currency"},
	}
	for name, c := range cases {
		_, err := c.ev.encode()
		if err == nil || Field(err) != c.field {
			t.Errorf("%s: error %v, want one naming %s", name, err, c.field)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	sales := []Sale{
		sale("A-1", 1),
		{OrderID: "#1001/ü", Line: MaxLine, SKU: "Ä-ß", Site: "Werk 1"[:4], Channel: "b2b-shop", Quantity: -0.25, UnitPrice: 0, Currency: "CHF",
			Time: time.Date(2026, 3, 29, 1, 59, 59, 999999999, cet)},
		{OrderID: strings.Repeat("é", MaxTokenLen), Line: 7, SKU: "s", Site: "p", Channel: "c", Quantity: inventory.MaxQty,
			UnitPrice: math.SmallestNonzeroFloat64, Currency: "XXX", Time: time.Date(1678, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, s := range sales {
		b := mustEncode(t, s)
		got, err := DecodeSale(SalesSubject("gemba", s.Channel), b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if !got.Time.Equal(s.Time) {
			t.Fatalf("time %v, want %v", got.Time, s.Time)
		}
		got.Time = s.Time
		if got != s {
			t.Fatalf("round trip %+v, want %+v", got, s)
		}
	}
	sn := Snapshot{SnapshotID: "erp\"1", SKU: "\\", Site: "<p/&amp;", OnHand: -1e-300, Time: time.Date(2261, 12, 31, 0, 59, 59, 0, cet)}
	got, err := DecodeSnapshot(mustEncode(t, sn))
	if err != nil || !got.Time.Equal(sn.Time) || got.OnHand != sn.OnHand || got.MsgID() != sn.MsgID() {
		t.Fatalf("round trip %+v, %v", got, err)
	}
}

func TestChannelOf(t *testing.T) {
	for subj, want := range map[string]string{"gemba.commerce.sales.web": "web", "a.b.commerce.sales.x": "x",
		"commerce.sales.web": "", "gemba.commerce.inventory": "", "gemba.commerce.sales.": "", "gemba.x.sales.web": ""} {
		got, ok := ChannelOf(subj)
		if got != want || ok != (want != "") {
			t.Errorf("ChannelOf(%q) = %q, %v; want %q", subj, got, ok, want)
		}
	}
}
