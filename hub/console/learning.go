package console

import (
	"net/http"

	"github.com/gemba-io/gemba/hub/learn/registry"
	"github.com/gemba-io/gemba/hub/monitor/kpi"
)

// learningPage shows the demand model sets (which one gives days of cover, which is shadowed, each
// with its data range and backtest error against the moving average) and the experiments' lifts.
func (c *Console) learningPage(w http.ResponseWriter, r *http.Request) {
	var data struct {
		Active, Shadow string
		Sets           []registry.Meta
		ModelsNote     string
		Lifts          []kpi.Lift
		LiftsNote      string
	}
	var l Learning
	if c.src.Learning != nil {
		l = c.src.Learning()
	}
	if l == nil {
		data.ModelsNote = "learning is off on this hub (learn.enabled) or not open yet"
		data.LiftsNote = "no experiments measured: the decision room is off or starting"
	} else {
		var err error
		if data.Active, data.Shadow, data.Sets, err = l.ModelSets(r.Context()); err != nil {
			data.ModelsNote = err.Error()
		} else if len(data.Sets) == 0 {
			data.ModelsNote = "no model set stored yet: the first refit makes one (gemba-hub models refit)"
		}
		if data.Lifts, err = l.Lifts(r.Context()); err != nil {
			data.LiftsNote = err.Error()
		} else if len(data.Lifts) == 0 {
			data.LiftsNote = "no experiment outcome measured yet (a unit is measured once its promotion window is over)"
		}
	}
	c.render(w, r, http.StatusOK, "learning", page{Title: "Learning", Data: data})
}
