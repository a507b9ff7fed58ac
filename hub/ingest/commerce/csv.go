package commerce

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// ImportOptions configure ImportInventory.
type ImportOptions struct {
	// Name is what errors call the input (the file name).
	Name string
	// SnapshotID names the snapshot when the file has no snapshot_id column. Empty: "csv-" and the first
	// 16 hex digits of the file's SHA-256, so importing the same file again is a no-op.
	SnapshotID string
	// MaxBytes bounds the input (DefaultConfig().MaxImportBytes when 0).
	MaxBytes int64
	// Metrics, when set, counts rows under source="csv".
	Metrics *Metrics
	// MaxFuture refuses rows dated further ahead of Now (the inventory's max_future; 0: no bound).
	MaxFuture time.Duration
	Now       func() time.Time // time.Now when nil
}

// RowError is one refused row (or the header, Line 1).
type RowError struct {
	Line   int    // 1-based line of the file where the row starts
	Column string // the column at fault, "" for the row as a whole
	Err    error
}

func (e RowError) Error() string {
	if e.Column == "" {
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	}
	return fmt.Sprintf("line %d: %s: %v", e.Line, e.Column, e.Err)
}

// Report says what an import did.
type Report struct {
	Name       string
	SnapshotID string // the one given or derived when the file has no snapshot_id column
	Rows       int    // data rows read (the header excluded)
	Published  int    // rows stored now
	Duplicates int    // rows the stream already held (an earlier import of the same snapshot)
	Failed     int    // rows not stored (the stream unavailable): run the import again
	Ignored    []string
	Errors     []RowError
}

// String summarises the import in one line, for the command's output.
func (r Report) String() string {
	s := fmt.Sprintf("%s: %d rows: %d published, %d already present, %d invalid, %d failed", r.Name, r.Rows, r.Published,
		r.Duplicates, len(r.Errors), r.Failed)
	if r.SnapshotID != "" {
		s += " (snapshot " + r.SnapshotID + ")"
	}
	return s
}

// ImportInventoryFile imports the CSV file at path (see ImportInventory); errors and the report are
// named after the path.
func ImportInventoryFile(ctx context.Context, pub EventPublisher, path string, opts ImportOptions) (Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return Report{Name: path}, err // *PathError names the file
	}
	defer f.Close()
	if opts.Name == "" {
		opts.Name = path
	}
	return ImportInventory(ctx, pub, f, opts)
}

// MaxRowErrors bounds the errors reported; a file that bad is the wrong file.
const MaxRowErrors = 1000

var csvColumns = []string{"sku", "site", "on_hand", "time"}

// ParseInventoryCSV reads an inventory CSV into snapshot rows and the rows it refused. The error is
// for a file that cannot be imported at all (no or bad header, too large, unreadable).
func ParseInventoryCSV(r io.Reader, opts ImportOptions) ([]Snapshot, Report, error) {
	rep := Report{Name: opts.Name}
	limit := opts.MaxBytes
	if limit <= 0 {
		limit = DefaultConfig().MaxImportBytes
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, rep, fmt.Errorf("%s: %w", opts.Name, err)
	}
	if int64(len(data)) > limit {
		return nil, rep, fmt.Errorf("%s: larger than %d bytes", opts.Name, limit)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // spreadsheets write a UTF-8 BOM
	cr := csv.NewReader(bytes.NewReader(data))
	cr.FieldsPerRecord = -1 // the row length is checked here, to name the line and keep going
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, rep, fmt.Errorf("%s: empty: a header row %s is required", opts.Name, strings.Join(csvColumns, ","))
	}
	if err != nil {
		return nil, rep, fmt.Errorf("%s: header: %w", opts.Name, err)
	}
	col := map[string]int{}
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(h))
		if _, dup := col[name]; dup {
			return nil, rep, fmt.Errorf("%s:1: column %q appears twice", opts.Name, name)
		}
		col[name] = i
	}
	var missing []string
	for _, c := range csvColumns {
		if _, ok := col[c]; !ok {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return nil, rep, fmt.Errorf("%s:1: header lacks column(s) %s (required: %s; optional: snapshot_id)",
			opts.Name, strings.Join(missing, ", "), strings.Join(csvColumns, ","))
	}
	for name := range col {
		switch name {
		case "sku", "site", "on_hand", "time", "snapshot_id":
		default:
			rep.Ignored = append(rep.Ignored, name)
		}
	}
	idCol, hasID := col["snapshot_id"]
	if !hasID {
		rep.SnapshotID = opts.SnapshotID
		if rep.SnapshotID == "" {
			sum := sha256.Sum256(data)
			rep.SnapshotID = "csv-" + hex.EncodeToString(sum[:8])
		} else if err := CheckToken(rep.SnapshotID); err != nil {
			return nil, rep, fmt.Errorf("%s: snapshot id: %v", opts.Name, err)
		}
	}
	now := time.Now()
	if opts.Now != nil {
		now = opts.Now()
	}
	var out []Snapshot
	seen := map[string]int{} // MsgID → line, to report a row given twice instead of letting JetStream drop it
	bad := func(line int, column string, err error) bool {
		rep.Errors = append(rep.Errors, RowError{Line: line, Column: column, Err: err})
		return len(rep.Errors) < MaxRowErrors
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			line := 0
			if errors.As(err, &pe) {
				line, err = pe.StartLine, pe.Err
			}
			rep.Rows++
			if !bad(line, "", err) {
				break
			}
			continue
		}
		line, _ := cr.FieldPos(0)
		rep.Rows++
		if len(rec) != len(header) {
			if !bad(line, "", fmt.Errorf("%d fields, the header has %d", len(rec), len(header))) {
				break
			}
			continue
		}
		id := rep.SnapshotID
		if hasID {
			id = strings.TrimSpace(rec[idCol])
		}
		s, column, err := parseRow(rec, col, id)
		if err == nil {
			if err = CheckFuture(s, now, opts.MaxFuture); err != nil {
				column = "time"
			}
		}
		if err != nil {
			if !bad(line, column, err) {
				break
			}
			continue
		}
		if first, dup := seen[s.MsgID()]; dup {
			if !bad(line, "", fmt.Errorf("snapshot %s, site %s, sku %s already given on line %d", s.SnapshotID, s.Site, s.SKU, first)) {
				break
			}
			continue
		}
		seen[s.MsgID()] = line
		out = append(out, s)
	}
	if len(rep.Errors) >= MaxRowErrors {
		rep.Errors = append(rep.Errors, RowError{Err: fmt.Errorf("stopped after %d errors", MaxRowErrors)})
	}
	return out, rep, nil
}

func parseRow(rec []string, col map[string]int, id string) (Snapshot, string, error) {
	s := Snapshot{SnapshotID: id}
	for _, c := range []struct {
		name string
		dst  *string
	}{{"snapshot_id", nil}, {"sku", &s.SKU}, {"site", &s.Site}} {
		v := id
		if c.dst != nil {
			v = strings.TrimSpace(rec[col[c.name]])
			*c.dst = v
		}
		if err := CheckToken(v); err != nil {
			return s, c.name, err
		}
	}
	v := strings.TrimSpace(rec[col["on_hand"]])
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
		return s, "on_hand", fmt.Errorf("must be a finite number, got %q", clipStr(v))
	}
	s.OnHand = n
	t, err := ParseTime(strings.TrimSpace(rec[col["time"]]))
	if err != nil {
		return s, "time", err
	}
	s.Time = t
	return s, "", nil
}

// ImportInventory reads an inventory CSV (docs/commerce-format.md "CSV import") and publishes its good
// rows; bad rows are in the Report with their line. The error is for an import that did not complete:
// a file that cannot be read or has no usable header, or rows that could not be stored (run it again:
// the rows' ids make it idempotent).
func ImportInventory(ctx context.Context, pub EventPublisher, r io.Reader, opts ImportOptions) (Report, error) {
	rows, rep, err := ParseInventoryCSV(r, opts)
	if err != nil {
		return rep, err
	}
	count := func(outcome string, n int) {
		if opts.Metrics != nil && n > 0 {
			opts.Metrics.Received.WithLabelValues("csv", kindInventory, outcome).Add(float64(n))
		}
	}
	count(outcomeInvalid, len(rep.Errors))
	events := make([]Event, len(rows))
	for i, s := range rows {
		events[i] = s
	}
	var firstErr error
	for _, res := range pub.Publish(ctx, events) {
		switch {
		case res.Err != nil:
			// A snapshot has no field the publisher refuses after parsing: every error here is a failed store.
			rep.Failed++
			if firstErr == nil {
				firstErr = res.Err
			}
		case res.Duplicate:
			rep.Duplicates++
		default:
			rep.Published++
		}
	}
	count(outcomeAccepted, rep.Published)
	count(outcomeDuplicate, rep.Duplicates)
	count(outcomeFailed, rep.Failed)
	if firstErr != nil {
		return rep, fmt.Errorf("%s: %d of %d rows not stored (run the import again): %w", opts.Name, rep.Failed, len(rows), firstErr)
	}
	return rep, nil
}
