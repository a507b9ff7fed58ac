package agent

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/gemba-io/gemba/signal"
)

// Health is what the agent makes of a collector's state for /readyz and the gemba_collector_up
// and gemba_collector_degraded gauges.
//
//   - Up: the collector reaches its source: states "running" and "degraded" (signal.CollectorStates);
//     "starting", "reconnecting", "backoff", "failed" and "stopped" are not up.
//   - Degraded: up, but not all of the source arrives: MQTT subscriptions the broker refused
//     (failed_subscriptions in the details) or OPC UA nodes quarantined (nodes_quarantined > 0).
//     The supervisor reports such a collector as "degraded" even when it says "running".
type Health struct {
	Up, Degraded bool
	Reason       string
}

// upStates are the states in which a collector reaches its source.
var upStates = map[string]bool{signal.CollectorRunning: true, signal.CollectorDegraded: true}

// health classifies the collector's current state.
func (s *supervisor) health() Health {
	st, details := s.stateDetails()
	return classify(st.State, st.Error, details)
}

func classify(state, lastErr string, details map[string]string) Health {
	h := Health{Up: upStates[state], Reason: state}
	if !h.Up {
		if e := firstNonEmpty(lastErr, details["last_error"]); e != "" {
			h.Reason += ": " + e
		}
		return h
	}
	var why []string
	if f := details["failed_subscriptions"]; f != "" {
		why = append(why, "subscriptions refused: "+f)
	}
	if q, _ := strconv.Atoi(details["nodes_quarantined"]); q > 0 {
		total := q
		for _, k := range []string{"nodes_active", "nodes_pending"} {
			n, _ := strconv.Atoi(details[k])
			total += n
		}
		why = append(why, fmt.Sprintf("%d of %d nodes quarantined (%s)", q, total, quarantined(details)))
	}
	if len(why) == 0 && state == signal.CollectorDegraded {
		why = append(why, firstNonEmpty(details["last_error"], "see the log"))
	}
	if len(why) > 0 {
		h.Degraded = true
		h.Reason = "degraded: " + strings.Join(why, "; ")
	}
	return h
}

// quarantined lists up to three quarantined nodes with their reasons, sorted, for the reason text.
func quarantined(details map[string]string) string {
	var out []string
	for k, v := range details {
		if sig, ok := strings.CutPrefix(k, "node "); ok && strings.HasPrefix(v, "quarantined") {
			out = append(out, sig+": "+v)
		}
	}
	sort.Strings(out)
	if len(out) > 3 {
		out = append(out[:3], fmt.Sprintf("and %d more", len(out)-3))
	}
	return strings.Join(out, ", ")
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
