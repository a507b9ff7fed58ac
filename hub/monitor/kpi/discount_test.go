package kpi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gemba-io/gemba/hub/audit"
	"github.com/gemba-io/gemba/internal/natstest"
	"github.com/gemba-io/gemba/internal/testutil"
)

// A record on the decision log whose discount no rule can give (past 100 %, negative) is not
// counted: two fired at 1e308 made the points total +Inf, and every KPI answer a 500 until they
// left the log.
func TestDiscountOutOfRangeNotCounted(t *testing.T) {
	n := natstest.JetStream(t)
	nc, js := natstest.Connect(t, n.URL())
	ctx := context.Background()
	log, err := audit.Open(ctx, js, audit.Config{Prefix: "gemba"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := log.Publish(ctx, rec(1, audit.EventDecided, audit.OutcomeFired, audit.ModeActive, "overstock", 10, time.Second), 0); err != nil {
		t.Fatal(err)
	}
	for i, d := range []float64{1e308, 1e308, -5} {
		r := rec(2+i, audit.EventDecided, audit.OutcomeFired, audit.ModeActive, "overstock", d, time.Second)
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish("gemba.decisions."+r.DecisionID, b); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 10*time.Second, "the four records stored", func() bool {
		st, err := js.Stream(ctx, audit.DefaultStream)
		if err != nil {
			return false
		}
		i, err := st.Info(ctx)
		return err == nil && i.State.Msgs == 4
	})
	tr, err := Open(ctx, js, Options{Audit: audit.Config{Prefix: "gemba"}, Lifts: lifts{}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	f := tr.Figures(ctx)
	if f.Discount.Promotions != 1 || f.Discount.PointsTotal != 10 || tr.Stats.Malformed.Load() != 3 {
		t.Errorf("discount %+v, malformed %d: want the one promotion at 10 %% counted, the three out of range malformed",
			f.Discount, tr.Stats.Malformed.Load())
	}
	w := httptest.NewRecorder()
	tr.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/api/v1/kpis", nil))
	if w.Code != http.StatusOK {
		t.Errorf("GET /api/v1/kpis: %d %s", w.Code, w.Body.String())
	}
}
