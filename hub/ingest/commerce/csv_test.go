package commerce

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/internal/testutil"
)

func TestParseInventoryCSV(t *testing.T) {
	in := "\xef\xbb\xbf" + ` Site ,SKU,on_hand,time,warehouse_bin
plant1,A-100,120,2026-12-04T06:00:00Z,B7
plant1,B-110,-3.5,2026-12-04T06:00:00+01:00,
plant1,C.120,1,2026-12-04T06:00:00Z,
plant2,A-100,many,2026-12-04T06:00:00Z,
plant2,B-110,1,2026-12-04,
plant2,C-120,1
"plant2","A-100","7","2026-12-04T06:00:00Z",x
plant1,A-100,5,2026-12-04T06:00:00Z,dup
"plant
3",A-100,1,2026-12-04T06:00:00Z,
plant3,A"-1,1,2026-12-04T06:00:00Z,
plant3,X-1,NaN,2026-12-04T06:00:00Z,
plant3,X-2,1e999,2026-12-04T06:00:00Z,
,X-3,1,2026-12-04T06:00:00Z,
`
	rows, rep, err := ParseInventoryCSV(strings.NewReader(in), ImportOptions{Name: "erp.csv"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[0].SKU != "A-100" || rows[1].OnHand != -3.5 || rows[2].Site != "plant2" || rows[2].OnHand != 7 {
		t.Fatalf("rows %+v", rows)
	}
	if !strings.HasPrefix(rep.SnapshotID, "csv-") || len(rep.SnapshotID) != 20 || rows[0].SnapshotID != rep.SnapshotID {
		t.Fatalf("derived snapshot id %q, rows carry %q", rep.SnapshotID, rows[0].SnapshotID)
	}
	if strings.Join(rep.Ignored, ",") != "warehouse_bin" {
		t.Errorf("ignored columns %v", rep.Ignored)
	}
	want := []struct {
		line   int
		column string
		msg    string
	}{
		{4, "sku", "cannot appear"},
		{5, "on_hand", "finite number"},
		{6, "time", "RFC 3339"},
		{7, "", "3 fields, the header has 5"},
		{9, "", "already given on line 2"},
		{10, "site", "cannot appear"},
		{12, "", "bare \" in non-quoted-field"},
		{13, "on_hand", "finite number"},
		{14, "on_hand", "finite number"},
		{15, "site", "must not be empty"},
	}
	if len(rep.Errors) != len(want) {
		t.Fatalf("errors %v, want %d", rep.Errors, len(want))
	}
	for i, w := range want {
		got := rep.Errors[i]
		if got.Line != w.line || got.Column != w.column || !strings.Contains(got.Error(), w.msg) {
			t.Errorf("error %d: %q (line %d, column %q), want line %d, column %q, %q", i, got.Error(), got.Line, got.Column, w.line, w.column, w.msg)
		}
	}
	if rep.Rows != 13 {
		t.Errorf("rows read %d, want 13", rep.Rows)
	}
	// The same bytes give the same derived id; other bytes another.
	_, rep2, _ := ParseInventoryCSV(strings.NewReader(in), ImportOptions{})
	_, rep3, _ := ParseInventoryCSV(strings.NewReader(in+"plant9,Z,1,2026-12-04T06:00:00Z,\n"), ImportOptions{})
	if rep2.SnapshotID != rep.SnapshotID || rep3.SnapshotID == rep.SnapshotID {
		t.Errorf("derived ids %s %s %s", rep.SnapshotID, rep2.SnapshotID, rep3.SnapshotID)
	}
}

func TestParseInventoryCSVHeader(t *testing.T) {
	for in, msg := range map[string]string{
		"":                                    "empty: a header row",
		"sku,site,on_hand\nA,p,1\n":           "lacks column(s) time",
		"site;sku;on_hand;time\n":             "lacks column(s) sku, site, on_hand, time",
		"sku,site,on_hand,time,SKU\n":         `column "sku" appears twice`,
		"\"sku,site,on_hand,time\n":           "header",
		strings.Repeat("x", 2000):             "larger than 1024 bytes",
		"snapshot_id,sku,site,on_hand,time\n": "",
	} {
		_, _, err := ParseInventoryCSV(strings.NewReader(in), ImportOptions{Name: "f.csv", MaxBytes: 1024})
		if msg == "" {
			if err != nil {
				t.Errorf("%q: %v", in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), msg) || !strings.HasPrefix(err.Error(), "f.csv") {
			t.Errorf("%q: error %v, want one naming the file and saying %q", clipStr(in), err, msg)
		}
	}
	// A given snapshot id is checked like any id.
	if _, _, err := ParseInventoryCSV(strings.NewReader("sku,site,on_hand,time\n"), ImportOptions{Name: "f.csv", SnapshotID: "a:b"}); err == nil {
		t.Error("snapshot id a:b accepted")
	}
	// A snapshot_id column wins and is checked per row.
	rows, rep, err := ParseInventoryCSV(strings.NewReader("snapshot_id,sku,site,on_hand,time\ns1,A,p,1,2026-12-04T06:00:00Z\n,B,p,1,2026-12-04T06:00:00Z\ns1,A,p2,1,2026-12-04T06:00:00Z\n"),
		ImportOptions{SnapshotID: "given"})
	if err != nil || len(rows) != 2 || rows[0].SnapshotID != "s1" || len(rep.Errors) != 1 || rep.Errors[0].Column != "snapshot_id" || rep.Errors[0].Line != 3 {
		t.Fatalf("snapshot_id column: %+v %+v %v", rows, rep, err)
	}
}

func TestParseInventoryCSVStopsAfterTooManyErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString("sku,site,on_hand,time\n")
	for range MaxRowErrors + 10 {
		b.WriteString("a,b,c,d\n")
	}
	_, rep, err := ParseInventoryCSV(strings.NewReader(b.String()), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Errors) != MaxRowErrors+1 || !strings.Contains(rep.Errors[MaxRowErrors].Error(), "stopped after") {
		t.Fatalf("%d errors, last %v", len(rep.Errors), rep.Errors[len(rep.Errors)-1])
	}
}

func TestImportInventory(t *testing.T) {
	js, _ := startJS(t)
	pub, err := NewPublisher(js, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("sku,site,on_hand,time\n")
	const n = 1500 // several publish windows
	for i := range n {
		b.WriteString("SKU-" + strconv.Itoa(i) + ",plant1," + strconv.Itoa(i) + ",2026-12-04T06:00:00Z\n")
	}
	b.WriteString("bad sku,plant1,1,2026-12-04T06:00:00Z\n")
	ctx := context.Background()
	rep, err := ImportInventory(ctx, pub, strings.NewReader(b.String()), ImportOptions{Name: "big.csv", SnapshotID: "erp-1", Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Published != n || rep.Duplicates != 0 || len(rep.Errors) != 1 || rep.Errors[0].Line != n+2 {
		t.Fatalf("report %+v", rep)
	}
	if got := streamMsgs(t, js); got != n {
		t.Fatalf("%d messages, want %d", got, n)
	}
	// Importing it again stores nothing new.
	rep, err = ImportInventory(ctx, pub, strings.NewReader(b.String()), ImportOptions{Name: "big.csv", SnapshotID: "erp-1", Metrics: m})
	if err != nil || rep.Published != 0 || rep.Duplicates != n {
		t.Fatalf("second import: %+v, %v", rep, err)
	}
	if got := streamMsgs(t, js); got != n {
		t.Fatalf("%d messages after the second import, want %d", got, n)
	}
	if v := testutil.Metric(t, reg, "gemba_commerce_events_received_total", "source", "csv", "outcome", "duplicate"); v != n {
		t.Fatalf("csv duplicates counted %v", v)
	}
	// Each stored message decodes to the row it came from, with the row's identity as Nats-Msg-Id.
	st, _ := js.Stream(ctx, "COMMERCE")
	msg, err := st.GetMsg(ctx, 8)
	if err != nil {
		t.Fatal(err)
	}
	s, err := DecodeSnapshot(msg.Data)
	if err != nil || s.SKU != "SKU-7" || s.OnHand != 7 || msg.Header.Get("Nats-Msg-Id") != "inv:erp-1:plant1:SKU-7" || msg.Subject != "gemba.commerce.inventory" {
		t.Fatalf("message 8: %s %v %+v %v", msg.Subject, msg.Header, s, err)
	}
}

func TestImportInventoryFile(t *testing.T) {
	pub := &recordPublisher{}
	path := filepath.Join(t.TempDir(), "erp.csv")
	if err := os.WriteFile(path, []byte("sku,site,on_hand,time\nA,p,1,2026-12-04T06:00:00Z\nB,p,x,2026-12-04T06:00:00Z\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := ImportInventoryFile(context.Background(), pub, path, ImportOptions{SnapshotID: "erp-9"})
	if err != nil || len(pub.events) != 1 {
		t.Fatalf("%+v, %v", rep, err)
	}
	if got := rep.String(); got != path+": 2 rows: 1 published, 0 already present, 1 invalid, 0 failed (snapshot erp-9)" {
		t.Fatalf("summary %q", got)
	}
	if got := rep.Errors[0].Error(); got != "line 3: on_hand: must be a finite number, got \"x\"" {
		t.Fatalf("row error %q", got)
	}
	if _, err := ImportInventoryFile(context.Background(), pub, path+".missing", ImportOptions{}); err == nil || !strings.Contains(err.Error(), "erp.csv.missing") {
		t.Fatalf("missing file: %v", err)
	}
}
