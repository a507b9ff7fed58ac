package kpi

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/internal/natstest"
)

// TestFiguresThatDoNotEncodeAre500: figures encoding/json refuses (here a discount total past the
// largest float) are a 500 that says what failed, logged, not a 200 with an empty body.
func TestFiguresThatDoNotEncodeAre500(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.JetStream(t).URL())
	if _, err := audit.Open(ctx, js, audit.Config{Prefix: "gemba"}, nil); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	tr, err := Open(ctx, js, Options{Audit: audit.Config{Prefix: "gemba"}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tr.mu.Lock()
	tr.discount.PointsTotal = math.Inf(1)
	tr.mu.Unlock()
	srv := httptest.NewServer(tr.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/kpis")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), `{"error":"kpis: encoding the figures: json: unsupported value: +Inf"}`) {
		t.Errorf("GET: %d %q, want 500 saying what failed", resp.StatusCode, body)
	}
	if !strings.Contains(logs.String(), "unsupported value: +Inf") {
		t.Errorf("not logged: %q", logs.String())
	}
}
