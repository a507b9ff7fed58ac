package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/monitor/fleet"
	"github.com/gemba-io/gemba/hub/state/features"
	"github.com/gemba-io/gemba/hub/state/graph"
	"github.com/gemba-io/gemba/hub/state/inventory"
	"github.com/gemba-io/gemba/internal/natstest"
)

// TestInventoryPaging: following "next" from page to page (as the whole query, with nothing else
// kept by the client) returns each position of the filter once, whatever the SKU id holds: a SKU
// may be any non-empty name, "&", "+", "#" and "%" included.
func TestInventoryPaging(t *testing.T) {
	_, js := natstest.Connect(t, natstest.JetStream(t).URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := inventory.DefaultConfig()
	s, err := inventory.Open(ctx, js, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now().UTC().Add(-time.Hour)
	skus := []string{"A", "A&B", "A+B", "A#1", "A%20", "B"}
	for i, sku := range skus {
		for _, site := range []string{"s1", "s2"} {
			if _, err := s.Snapshot(ctx, inventory.Snapshot{ID: "count-" + site + "-" + string(rune('a'+i)), SKU: sku, Site: site, OnHand: 10, Time: now}); err != nil {
				t.Fatal(err)
			}
		}
	}
	h := Handler(Sources{
		Fleet:     func() *fleet.Fleet { return nil },
		Features:  func() *features.Store { return nil },
		Inventory: func() *inventory.Store { return s },
		Graph:     func() *graph.Graph { return nil },
	}, "")
	seen := map[string]int{}
	query := "site=s1&limit=1"
	for pages := 0; query != ""; pages++ {
		if pages > 2*len(skus) {
			t.Fatalf("still paging after %d pages (seen %v)", pages, seen)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/inventory?"+query, nil))
		if w.Code != 200 {
			t.Fatalf("%s: %d %s", query, w.Code, w.Body.String())
		}
		var out struct {
			Positions []inventory.Position `json:"positions"`
			Next      string               `json:"next"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatal(err)
		}
		for _, p := range out.Positions {
			seen[p.Site+"/"+p.SKU]++
		}
		query = out.Next
	}
	for _, sku := range skus {
		if seen["s1/"+sku] != 1 {
			t.Errorf("s1/%s listed %d times, want once (all: %v)", sku, seen["s1/"+sku], seen)
		}
	}
	if len(seen) != len(skus) {
		t.Errorf("listed %v, want the %d positions of s1 only", seen, len(skus))
	}
}
