package commerce

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/gemba-io/gemba/config"
	"github.com/gemba-io/gemba/hub/state/inventory"
)

const (
	schemaPath = "../../../docs/commerce.schema.json"
	docPath    = "../../../docs/commerce-format.md"
)

func compileSchema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	path, err := filepath.Abs(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat() // date-time is checked, not just annotated
	sch, err := c.Compile(path)
	if err != nil {
		t.Fatalf("compile %s: %v", schemaPath, err)
	}
	return sch
}

func validate(sch *jsonschema.Schema, data []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return err
	}
	return sch.Validate(inst)
}

// docBlocks returns the fenced blocks of the format doc with the given info string.
func docBlocks(t *testing.T, lang string) []string {
	t.Helper()
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)```" + lang + "\n(.*?)```")
	var out []string
	for _, m := range re.FindAllStringSubmatch(string(doc), -1) {
		out = append(out, m[1])
	}
	return out
}

// decodeAny decodes an event by its fields, as the consumer does by its subject.
func decodeAny(data []byte) (Event, error) {
	if bytes.Contains(data, []byte(`"snapshot_id"`)) {
		return DecodeSnapshot(data)
	}
	return DecodeSale("", data)
}

// The doc's JSON examples are valid for the schema, decode, and re-encode to the same event.
func TestDocExamples(t *testing.T) {
	sch := compileSchema(t)
	blocks := docBlocks(t, "json")
	if len(blocks) < 3 {
		t.Fatalf("found %d JSON examples in %s, want the sale, the return and the snapshot", len(blocks), docPath)
	}
	for _, b := range blocks {
		data := []byte(strings.TrimSpace(b))
		if err := validate(sch, data); err != nil {
			t.Errorf("doc example %s: schema: %v", data, err)
		}
		ev, err := decodeAny(data)
		if err != nil {
			t.Errorf("doc example %s: decode: %v", data, err)
			continue
		}
		enc := mustEncode(t, ev)
		if err := validate(sch, enc); err != nil {
			t.Errorf("encoded %s: schema: %v", enc, err)
		}
	}
	// The CSV example imports cleanly.
	csvs := docBlocks(t, "text")
	var found bool
	for _, c := range csvs {
		if !strings.HasPrefix(c, "snapshot_id,") {
			continue
		}
		found = true
		rows, rep, err := ParseInventoryCSV(strings.NewReader(c), ImportOptions{Name: "doc"})
		if err != nil || len(rep.Errors) > 0 || len(rows) != 2 {
			t.Errorf("doc CSV: %d rows, %v, %v", len(rows), rep.Errors, err)
		}
	}
	if !found {
		t.Error("no CSV example in the doc")
	}
}

// The doc's configuration example decodes strictly and validates, and its values are the defaults
// (apart from the channels and the token), so the doc cannot drift from DefaultConfig.
func TestDocConfig(t *testing.T) {
	blocks := docBlocks(t, "yaml")
	if len(blocks) != 1 {
		t.Fatalf("want one YAML block in %s, found %d", docPath, len(blocks))
	}
	var doc struct {
		Commerce Config `yaml:"commerce"`
	}
	doc.Commerce = DefaultConfig()
	env := func(k string) (string, bool) { return "s3cret", k == "GEMBA_COMMERCE_TOKEN" }
	if err := config.NewDecoder(config.WithEnv(env)).Unmarshal([]byte(blocks[0]), &doc); err != nil {
		t.Fatal(err)
	}
	got := doc.Commerce
	if got.HTTP.Token.Value() != "s3cret" || strings.Join(got.Channels, ",") != "web,retail,wholesale" {
		t.Fatalf("token or channels not read: %+v", got)
	}
	if err := got.check(true); err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Channels, want.HTTP.Token = got.Channels, got.HTTP.Token
	if !equalConfig(got, want) {
		t.Fatalf("doc config %+v\ndiffers from the defaults %+v", got, want)
	}
}

func equalConfig(a, b Config) bool {
	return strings.Join(a.Channels, ",") == strings.Join(b.Channels, ",") && a.Prefix == b.Prefix && a.Stream == b.Stream &&
		a.Replicas == b.Replicas && a.DuplicateWindow == b.DuplicateWindow && a.MaxAge == b.MaxAge && a.MaxBytes == b.MaxBytes &&
		a.Consumer == b.Consumer && a.AckWait == b.AckWait && a.RetryDelay == b.RetryDelay && a.Batch == b.Batch &&
		a.MaxAckPending == b.MaxAckPending && a.PublishTimeout == b.PublishTimeout && a.HTTP == b.HTTP && a.MaxImportBytes == b.MaxImportBytes
}

// Encoder output at the edges of every field is valid for the schema.
func TestEncoderOutputMatchesSchema(t *testing.T) {
	sch := compileSchema(t)
	cet := time.FixedZone("", -(9*3600 + 30*60))
	events := []Event{
		sale("A-1", 1),
		Sale{OrderID: strings.Repeat("ü", MaxTokenLen), Line: MaxLine, SKU: "\"\\<&", Site: "Ä", Channel: "b2b", Quantity: -inventory.MaxQty,
			UnitPrice: 0, Currency: "XXX", Time: time.Date(1678, 1, 1, 0, 0, 0, 1, time.UTC)},
		Sale{OrderID: "o", Line: 1, SKU: "s", Site: "p", Channel: "c", Quantity: math.SmallestNonzeroFloat64, UnitPrice: 1e21,
			Currency: "JPY", Time: time.Date(2261, 12, 30, 14, 29, 59, 999999999, cet)},
		snapshot("erp-1", "plant1", "SKU-1", 0),
		Snapshot{SnapshotID: "#", SKU: "\u2028", Site: "/", OnHand: -1e-7, Time: t0.In(cet)},
	}
	for _, ev := range events {
		enc := mustEncode(t, ev)
		if err := validate(sch, enc); err != nil {
			t.Errorf("%s: %v", enc, err)
		}
	}
}

// The schema refuses what the decoder refuses, for the rules it can express.
func TestSchemaRefusesInvalid(t *testing.T) {
	sch := compileSchema(t)
	for _, bad := range []string{
		with(goodSale, "schema", "2"),
		with(goodSale, "order_id", `"A:1"`),
		with(goodSale, "order_id", `"A.1"`),
		with(goodSale, "order_id", `""`),
		with(goodSale, "order_id", `"`+strings.Repeat("x", MaxTokenLen+1)+`"`),
		with(goodSale, "sku", `"a\u0007"`),
		with(goodSale, "line", "0"),
		with(goodSale, "line", "1.5"),
		with(goodSale, "quantity", "0"),
		with(goodSale, "quantity", `"2"`),
		with(goodSale, "unit_price", "-0.01"),
		with(goodSale, "currency", `"eur"`),
		with(goodSale, "time", `"2026-12-04T10:00:00"`),
		with(goodSale, "time", `"0000-12-04T10:00:00Z"`),
		with(goodSale, "time", `"2026-12-04 10:00:00Z"`),
		with(goodSale, "site", ""),
		with(goodSnap, "on_hand", `"1"`),
		with(goodSnap, "snapshot_id", `"a b"`),
		with(goodSnap, "time", ""),
	} {
		if err := validate(sch, []byte(bad)); err == nil {
			t.Errorf("schema accepts %s", clipStr(bad))
		}
		if _, err := decodeAny([]byte(bad)); err == nil {
			t.Errorf("decoder accepts %s", clipStr(bad))
		}
	}
}
