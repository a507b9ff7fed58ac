// Package commerce takes the hub's commerce inputs — sales events and inventory snapshots — from the
// COMMERCE stream, an HTTP endpoint and CSV files, and applies each exactly once to a Sink.
package commerce

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/signal"
)

// SchemaVersion is the event schema this package writes and reads (docs/commerce-format.md).
const SchemaVersion = 1

// MaxTokenLen bounds ids, SKUs, sites and channels, in characters (the JSON Schema's maxLength counts
// characters too, so both agree).
const MaxTokenLen = 128

// MaxLine bounds an order line number.
const MaxLine = 1_000_000_000

// Sale is one order line sold (or returned) through a channel, shipped from a site.
type Sale struct {
	OrderID   string
	Line      int64 // order line number, ≥ 1 (not a production line)
	SKU       string
	Site      string // the site the goods ship from: inventory is kept per SKU × site
	Channel   string // equals the last token of the subject
	Quantity  float64
	UnitPrice float64 // ≥ 0, in Currency
	Currency  string  // ISO 4217 code, three upper-case letters
	Time      time.Time
}

// Snapshot is one row of an ERP inventory count: units of a SKU on hand at a site at Time.
type Snapshot struct {
	SnapshotID string // one ERP count covers many rows, each (site, SKU) once
	SKU        string
	Site       string
	OnHand     float64 // may be negative: some ERPs report negative book stock
	Time       time.Time
}

// MsgID is the sale's identity: the Nats-Msg-Id it is published with and the dedup marker it claims.
func (s Sale) MsgID() string { return "sale:" + s.OrderID + ":" + strconv.FormatInt(s.Line, 10) }

// MsgID is the snapshot row's identity: the Nats-Msg-Id it is published with and the dedup marker it claims.
func (s Snapshot) MsgID() string { return "inv:" + s.SnapshotID + ":" + s.Site + ":" + s.SKU }

// IsReturn reports whether the sale is a return: goods coming back into stock at Site.
func (s Sale) IsReturn() bool { return s.Quantity < 0 }

// FieldError says which field of an event is wrong and why.
type FieldError struct {
	Field string // JSON field name; "" for the event as a whole
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Field returns the field named by err, if it is (or wraps) a *FieldError.
func Field(err error) string {
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe.Field
	}
	return ""
}

// CheckToken reports why v cannot be an id, SKU, site or channel: those travel as NATS subject tokens
// (channel) and as ':'-separated parts of message ids, so neither the characters a token refuses nor ':'
// may appear; control characters and invalid UTF-8 are refused so logs and keys stay printable.
func CheckToken(v string) error {
	if err := signal.CheckToken(v); err != nil {
		return err
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("%q is not valid UTF-8", v)
	}
	if n := utf8.RuneCountInString(v); n > MaxTokenLen {
		return fmt.Errorf("is %d characters long, at most %d allowed", n, MaxTokenLen)
	}
	if len(v) > inventory.MaxNameLen {
		return fmt.Errorf("is %d bytes long in UTF-8, at most %d allowed", len(v), inventory.MaxNameLen)
	}
	for _, r := range v {
		if r == ':' || r < 0x20 || r == 0x7f {
			return fmt.Errorf("%q contains %q, which cannot appear in an id", v, r)
		}
	}
	return nil
}

var currencyRe = regexp.MustCompile(`^[A-Z]{3}$`)

// Validate checks every field; the error is a *FieldError.
func (s Sale) Validate() error {
	for _, f := range []struct{ name, v string }{{"order_id", s.OrderID}, {"sku", s.SKU}, {"site", s.Site}, {"channel", s.Channel}} {
		if err := CheckToken(f.v); err != nil {
			return fieldErr(f.name, "%v", err)
		}
	}
	switch {
	case s.Line < 1 || s.Line > MaxLine:
		return fieldErr("line", "must be between 1 and %d, got %d", MaxLine, s.Line)
	case math.IsNaN(s.Quantity) || math.IsInf(s.Quantity, 0):
		return fieldErr("quantity", "must be a finite number, got %v", s.Quantity)
	case s.Quantity == 0:
		return fieldErr("quantity", "must not be 0 (negative for a return)")
	case math.Abs(s.Quantity) > inventory.MaxQty:
		return fieldErr("quantity", "must be within ±%g, got %v", inventory.MaxQty, s.Quantity)
	case math.IsNaN(s.UnitPrice) || math.IsInf(s.UnitPrice, 0) || s.UnitPrice < 0:
		return fieldErr("unit_price", "must be a finite number ≥ 0, got %v", s.UnitPrice)
	case !currencyRe.MatchString(s.Currency):
		return fieldErr("currency", "must be an ISO 4217 code (three upper-case letters), got %q", s.Currency)
	}
	return checkTime(s.Time)
}

// Validate checks every field; the error is a *FieldError.
func (s Snapshot) Validate() error {
	for _, f := range []struct{ name, v string }{{"snapshot_id", s.SnapshotID}, {"sku", s.SKU}, {"site", s.Site}} {
		if err := CheckToken(f.v); err != nil {
			return fieldErr(f.name, "%v", err)
		}
	}
	if math.IsNaN(s.OnHand) || math.IsInf(s.OnHand, 0) {
		return fieldErr("on_hand", "must be a finite number, got %v", s.OnHand)
	}
	if math.Abs(s.OnHand) > inventory.MaxQty {
		return fieldErr("on_hand", "must be within ±%g, got %v", inventory.MaxQty, s.OnHand)
	}
	return checkTime(s.Time)
}

// checkTime: the state keeps times as Unix nanoseconds (years 1678 to 2261); Go's zero time is what
// an unset field marshals to, so it is refused too.
func checkTime(t time.Time) error {
	if t.IsZero() {
		return fieldErr("time", "must be set (got the zero time 0001-01-01T00:00:00Z)")
	}
	if t.Before(inventory.MinTime) || t.After(inventory.MaxTime) {
		return fieldErr("time", "must be between %s and %s (the state keeps Unix nanoseconds), got %s",
			inventory.MinTime.Format(time.DateOnly), inventory.MaxTime.Format(time.DateOnly), t.UTC().Format(time.RFC3339))
	}
	return nil
}

// CheckFuture refuses an event dated more than maxFuture ahead of now (0: no bound): the inventory
// refuses it when it applies it (inventory.max_future), so a sender that can hear why is told now.
func CheckFuture(e Event, now time.Time, maxFuture time.Duration) error {
	if t := e.when(); maxFuture > 0 && t.After(now.Add(maxFuture)) {
		return fieldErr("time", "%s is more than %s ahead of the hub's clock (%s): the inventory would refuse it",
			t.UTC().Format(time.RFC3339), maxFuture, now.UTC().Format(time.RFC3339))
	}
	return nil
}

// wireSale is the JSON form; fields in this order, as the schema lists them.
type wireSale struct {
	Schema    int     `json:"schema"`
	OrderID   string  `json:"order_id"`
	Line      int64   `json:"line"`
	SKU       string  `json:"sku"`
	Site      string  `json:"site"`
	Channel   string  `json:"channel"`
	Quantity  float64 `json:"quantity"`
	UnitPrice float64 `json:"unit_price"`
	Currency  string  `json:"currency"`
	Time      string  `json:"time"`
}

type wireSnapshot struct {
	Schema     int     `json:"schema"`
	SnapshotID string  `json:"snapshot_id"`
	SKU        string  `json:"sku"`
	Site       string  `json:"site"`
	OnHand     float64 `json:"on_hand"`
	Time       string  `json:"time"`
}

// EncodeSale returns the JSON of a valid sale, or the *FieldError that makes it invalid.
func EncodeSale(s Sale) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(wireSale{SchemaVersion, s.OrderID, s.Line, s.SKU, s.Site, s.Channel, s.Quantity, s.UnitPrice,
		s.Currency, s.Time.Format(time.RFC3339Nano)})
}

// EncodeSnapshot returns the JSON of a valid snapshot row, or the *FieldError that makes it invalid.
func EncodeSnapshot(s Snapshot) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(wireSnapshot{SchemaVersion, s.SnapshotID, s.SKU, s.Site, s.OnHand, s.Time.Format(time.RFC3339Nano)})
}

// MaxEventSize bounds one encoded event; a real one is a few hundred bytes.
const MaxEventSize = 64 << 10

// object reads one JSON object into its members, refusing duplicate keys (which would make the event
// mean what the last copy says in one decoder and the first in another) and anything after the object.
// Unknown members are kept and ignored by the callers: newer producers may add optional fields.
func object(data []byte) (map[string]json.RawMessage, error) {
	if len(data) > MaxEventSize {
		return nil, fieldErr("", "event is %d bytes, at most %d allowed", len(data), MaxEventSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, fieldErr("", "invalid JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fieldErr("", "an event must be a JSON object, got %s", describe(tok))
	}
	m := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fieldErr("", "invalid JSON: %v", err)
		}
		key, _ := tok.(string) // object keys are always strings once Token succeeded
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fieldErr(clipStr(key), "invalid JSON: %v", err) // the key may be anything, of any length
		}
		if _, dup := m[key]; dup {
			return nil, fieldErr(clipStr(key), "appears twice")
		}
		m[key] = v
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, fieldErr("", "invalid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fieldErr("", "unexpected data after the event object")
	}
	return m, nil
}

func describe(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '[' {
			return "an array"
		}
		return string(v)
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", tok)
}

// fields reads the members of one event, remembering the first problem.
type fields struct {
	m   map[string]json.RawMessage
	err error
}

func (f *fields) fail(e *FieldError) {
	if f.err == nil {
		f.err = e
	}
}

func (f *fields) raw(name string) (json.RawMessage, bool) {
	v, ok := f.m[name]
	if !ok || bytes.Equal(v, []byte("null")) {
		f.fail(fieldErr(name, "missing"))
		return nil, false
	}
	return v, true
}

func (f *fields) str(name string) string {
	v, ok := f.raw(name)
	if !ok {
		return ""
	}
	var s string
	if v[0] != '"' || json.Unmarshal(v, &s) != nil {
		f.fail(fieldErr(name, "must be a string, got %s", clip(v)))
		return ""
	}
	if s == "" {
		f.fail(fieldErr(name, "must not be empty"))
	}
	return s
}

func (f *fields) token(name string) string {
	s := f.str(name)
	if s != "" {
		if err := CheckToken(s); err != nil {
			f.fail(fieldErr(name, "%v", err))
		}
	}
	return s
}

func (f *fields) number(name string) float64 {
	v, ok := f.raw(name)
	if !ok {
		return 0
	}
	var n json.Number
	if v[0] == '"' || json.Unmarshal(v, &n) != nil { // json.Number would take "2" too
		f.fail(fieldErr(name, "must be a number, got %s", clip(v)))
		return 0
	}
	x, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsInf(x, 0) {
		f.fail(fieldErr(name, "%s is out of range", clip(v)))
		return 0
	}
	return x
}

// integer accepts 3 and 3.0 alike: JSON Schema's "integer" means a number without a fraction.
func (f *fields) integer(name string, lo, hi int64) int64 {
	v, ok := f.raw(name)
	if !ok {
		return 0
	}
	var n json.Number
	if v[0] == '"' || json.Unmarshal(v, &n) != nil {
		f.fail(fieldErr(name, "must be an integer, got %s", clip(v)))
		return 0
	}
	i, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil {
		x, ferr := strconv.ParseFloat(string(n), 64)
		if ferr != nil || x != math.Trunc(x) || x < float64(lo) || x > float64(hi) {
			f.fail(fieldErr(name, "must be an integer between %d and %d, got %s", lo, hi, clip(v)))
			return 0
		}
		i = int64(x)
	}
	if i < lo || i > hi {
		f.fail(fieldErr(name, "must be an integer between %d and %d, got %s", lo, hi, clip(v)))
	}
	return i
}

func (f *fields) time(name string) time.Time {
	s := f.str(name)
	if s == "" {
		return time.Time{}
	}
	t, err := ParseTime(s)
	if err != nil {
		f.fail(fieldErr(name, "%v", err))
	}
	return t
}

// ParseTime reads an RFC 3339 time with its offset ("2026-12-04T10:00:00Z", "…+01:00").
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("must be an RFC 3339 time such as 2026-12-04T10:00:00Z, got %q", clipStr(s))
	}
	if err := checkTime(t); err != nil {
		return time.Time{}, errors.New(err.(*FieldError).Msg)
	}
	return t, nil
}

func (f *fields) schema() {
	// ±2^53: every such integer converts exactly between float64 and int64.
	if v := f.integer("schema", -1<<53, 1<<53); f.err == nil && v != SchemaVersion {
		f.fail(fieldErr("schema", "version %d is not supported (this hub reads %d)", v, SchemaVersion))
	}
}

// DecodeSale decodes a sale published on subject ("<prefix>.commerce.sales.<channel>"), whose last token
// must equal the event's channel. subject "" skips that check (an event posted over HTTP, before it has a
// subject). Errors are *FieldError naming the first bad field.
func DecodeSale(subject string, data []byte) (Sale, error) {
	m, err := object(data)
	if err != nil {
		return Sale{}, err
	}
	f := &fields{m: m}
	f.schema()
	if f.err != nil {
		return Sale{}, f.err // a newer schema may mean anything by its fields
	}
	s := Sale{
		OrderID: f.token("order_id"), Line: f.integer("line", 1, MaxLine), SKU: f.token("sku"), Site: f.token("site"),
		Channel: f.token("channel"), Quantity: f.number("quantity"), UnitPrice: f.number("unit_price"),
		Currency: f.str("currency"), Time: f.time("time"),
	}
	if f.err != nil {
		return Sale{}, f.err
	}
	if err := s.Validate(); err != nil {
		return Sale{}, err
	}
	if subject != "" {
		ch, ok := ChannelOf(subject)
		if !ok {
			return Sale{}, fieldErr("", "subject %q is not <prefix>.commerce.sales.<channel>", clipStr(subject))
		}
		if ch != s.Channel {
			return Sale{}, fieldErr("channel", "%q differs from the subject's channel %q", s.Channel, ch)
		}
	}
	return s, nil
}

// DecodeSnapshot decodes one inventory snapshot row. Errors are *FieldError naming the first bad field.
func DecodeSnapshot(data []byte) (Snapshot, error) {
	m, err := object(data)
	if err != nil {
		return Snapshot{}, err
	}
	f := &fields{m: m}
	f.schema()
	if f.err != nil {
		return Snapshot{}, f.err
	}
	s := Snapshot{SnapshotID: f.token("snapshot_id"), SKU: f.token("sku"), Site: f.token("site"),
		OnHand: f.number("on_hand"), Time: f.time("time")}
	if f.err != nil {
		return Snapshot{}, f.err
	}
	if err := s.Validate(); err != nil {
		return Snapshot{}, err
	}
	return s, nil
}

// ChannelOf returns the channel token of a sales subject "<prefix>.commerce.sales.<channel>".
func ChannelOf(subject string) (string, bool) {
	parts := strings.Split(subject, ".")
	n := len(parts)
	if n < 4 || parts[n-3] != "commerce" || parts[n-2] != "sales" || parts[n-1] == "" {
		return "", false
	}
	return parts[n-1], true
}

// clip keeps error messages short whatever the input.
func clip(v []byte) string { return clipStr(string(v)) }

func clipStr(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}
