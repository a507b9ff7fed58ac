package agent

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Health is what the agent makes of a collector's state for /readyz and the gemba_collector_up
// and gemba_collector_degraded gauges.
//
//   - Up: the collector reaches its source. States "running" (a collector that reports no state of
//     its own), "connected", "subscribing", "degraded" and "stalled" are up; "starting",
//     "connecting", "reconnecting", "backoff", "failed" and "stopped" are not.
//   - Degraded: up, but not all of the source arrives: state "degraded" (MQTT subscriptions the
//     broker refused), "stalled" (a subscription silent past its stall timeout) or any OPC UA node
//     quarantined (nodes_quarantined > 0 in the collector's details).
type Health struct {
	Up, Degraded bool
	Reason       string
}

// upStates are the states in which a collector reaches its source.
var upStates = map[string]bool{"running": true, "connected": true, "subscribing": true, "degraded": true, "stalled": true}

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
	switch state {
	case "degraded":
		why = append(why, "subscriptions refused: "+firstNonEmpty(details["failed_subscriptions"], "see the log"))
	case "stalled":
		why = append(why, "subscription stalled: "+firstNonEmpty(details["stalled_subscription"], "see the log"))
	}
	if q, _ := strconv.Atoi(details["nodes_quarantined"]); q > 0 {
		total := q
		for _, k := range []string{"nodes_active", "nodes_pending"} {
			n, _ := strconv.Atoi(details[k])
			total += n
		}
		why = append(why, fmt.Sprintf("%d of %d nodes quarantined (%s)", q, total, quarantined(details)))
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
