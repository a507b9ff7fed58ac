package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/internal/natstest"
)

// shortScan is a decision room over a real decision log whose reads stop after 5 messages (the
// hub's stop after audit.DefaultMaxScan): the API layer's answer when a read stops short is under
// test, without writing 20,000 records.
type shortScan struct {
	fakeDecisions
	log *audit.Log
}

func (s *shortScan) Recent(ctx context.Context, f audit.Filter) ([]audit.Record, error) {
	f.MaxScan = 5
	return s.log.Recent(ctx, f)
}

func (s *shortScan) RecentPage(ctx context.Context, f audit.Filter) (audit.Page, error) {
	f.MaxScan = 5
	return s.log.RecentPage(ctx, f)
}

// TestDecisionsSayWhereTheScanStopped: a filter that matches only old records finds none within
// the messages a read may scan. The answer must say the scan stopped (not "no such decision") and
// carry next, the query that goes on from where it stopped; following next finds every match once,
// newest first, and the last page has no next. A full page carries next as well.
func TestDecisionsSayWhereTheScanStopped(t *testing.T) {
	_, js := natstest.Connect(t, natstest.JetStream(t).URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := audit.Open(ctx, js, audit.Config{Prefix: "gemba"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// 12 records; SKU "old" on the first two only.
	for i := 1; i <= 12; i++ {
		sku := "new"
		if i <= 2 {
			sku = "old"
		}
		r := audit.Record{DecisionID: fmt.Sprintf("%032x", i), Event: audit.EventDecided, Outcome: audit.OutcomeFired,
			Mode: audit.ModeActive, Time: time.Now().UTC(), RuleSet: audit.RuleSetRef{Name: "p", Version: "v1"}, SKU: sku, Channel: "web"}
		if _, err := l.Publish(ctx, r, 0); err != nil {
			t.Fatal(err)
		}
	}
	h := DecisionsHandler(func() Decisions { return &shortScan{log: l} }, "", "")
	type page struct {
		Decisions []audit.Record `json:"decisions"`
		ScanCut   bool           `json:"scan_cut"`
		Next      string         `json:"next"`
	}
	get := func(query string) page {
		t.Helper()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/decisions?"+query, nil))
		if w.Code != 200 {
			t.Fatalf("%s: %d %s", query, w.Code, w.Body.String())
		}
		var p page
		if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := get("sku=old")
	if len(p.Decisions) != 0 || !p.ScanCut || p.Next == "" {
		t.Fatalf("sku=old, first read: %d decisions, scan_cut %v, next %q: want none, scan_cut and next (the scan stopped "+
			"after 5 messages of 12; an answer without them reads as \"no decision for this SKU\")", len(p.Decisions), p.ScanCut, p.Next)
	}
	var got []string
	query := "sku=old"
	for pages := 0; query != ""; pages++ {
		if pages > 10 {
			t.Fatalf("still paging after %d pages: %v", pages, got)
		}
		p := get(query)
		for _, r := range p.Decisions {
			got = append(got, r.DecisionID[30:]+"/"+r.SKU)
		}
		if p.Next == "" && p.ScanCut {
			t.Fatalf("%s: scan_cut without next", query)
		}
		query = p.Next
	}
	if fmt.Sprint(got) != "[02/old 01/old]" {
		t.Fatalf("following next from sku=old found %v, want [02/old 01/old]", got)
	}
	// A full page says where the next one starts; the last one does not.
	got = nil
	query = "limit=4"
	for pages := 0; query != ""; pages++ {
		if pages > 10 {
			t.Fatalf("still paging after %d pages: %v", pages, got)
		}
		p := get(query)
		if len(p.Decisions) > 4 {
			t.Fatalf("%s: %d decisions", query, len(p.Decisions))
		}
		for _, r := range p.Decisions {
			got = append(got, r.DecisionID[30:])
		}
		query = p.Next
	}
	if fmt.Sprint(got) != "[0c 0b 0a 09 08 07 06 05 04 03 02 01]" {
		t.Fatalf("paging by 4 found %v, want every record once, newest first", got)
	}
	for _, q := range []string{"before=0", "before=x", "before=-1"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/decisions?"+q, nil))
		if w.Code != 400 {
			t.Errorf("%s: %d %s, want 400", q, w.Code, w.Body.String())
		}
	}
}
