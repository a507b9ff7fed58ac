package signal

import (
	"encoding/json"
	"maps"
	"math"
	"time"
)

// Status is the agent's heartbeat, published on the status stream every few seconds.
type Status struct {
	Time          time.Time                 `json:"time"`
	Agent         string                    `json:"agent"`
	Site          string                    `json:"site"`
	Version       string                    `json:"version"`
	Commit        string                    `json:"commit,omitempty"`
	ConfigVersion string                    `json:"config_version"`
	Uptime        float64                   `json:"uptime_s"`
	Buffer        map[string]BufferState    `json:"buffer,omitempty"`
	Collectors    map[string]CollectorState `json:"collectors,omitempty"`
}

// BufferState is the buffer state of one stream.
type BufferState struct {
	Records   uint64            `json:"records"`
	Bytes     uint64            `json:"bytes"`
	OldestAge float64           `json:"oldest_age_s"`
	Dropped   map[string]uint64 `json:"dropped,omitempty"` // by reason
}

// Collector states: the one set a status record's collectors.<name>.state takes (an enum in
// docs/batch.schema.json). Collectors report them through collectors.Stater, the agent adds
// backoff and failed for a Run that returned an error.
const (
	CollectorStarting     = "starting"     // connecting or subscribing for the first time: not receiving yet
	CollectorRunning      = "running"      // receiving its whole source
	CollectorDegraded     = "degraded"     // receiving part of it: OPC UA nodes quarantined, MQTT subscriptions refused
	CollectorReconnecting = "reconnecting" // lost its source (or a subscription went silent) and reconnects itself
	CollectorBackoff      = "backoff"      // its run failed; the agent restarts it after a delay
	CollectorFailed       = "failed"       // a permanent error (bad credentials, config): not retried until a reload
	CollectorStopped      = "stopped"      // stopped by shutdown or reload
)

// CollectorStates lists every collector state, in the order of the lifecycle.
var CollectorStates = []string{CollectorStarting, CollectorRunning, CollectorDegraded, CollectorReconnecting,
	CollectorBackoff, CollectorFailed, CollectorStopped}

// IsCollectorState reports whether s is one of CollectorStates.
func IsCollectorState(s string) bool {
	for _, x := range CollectorStates {
		if s == x {
			return true
		}
	}
	return false
}

// CollectorState is the health of one collector.
type CollectorState struct {
	State    string `json:"state"` // one of CollectorStates
	Error    string `json:"error,omitempty"`
	Restarts uint64 `json:"restarts"`
	Samples  uint64 `json:"samples"`
}

// AppendStatusJSON appends statuses as a JSON array. Heartbeats are rare; encoding/json is fine here.
// Times are written in UTC like every other wire time; a non-finite uptime or buffer age (which
// encoding/json cannot write, and which would otherwise cost the whole heartbeat) is written as 0.
func AppendStatusJSON(dst []byte, st []Status) []byte {
	norm := make([]Status, len(st))
	for i, s := range st {
		s.Time = wireClamp(s.Time)
		s.Uptime = finiteOrZero(s.Uptime)
		if len(s.Buffer) > 0 {
			s.Buffer = maps.Clone(s.Buffer)
			for k, b := range s.Buffer {
				b.OldestAge = finiteOrZero(b.OldestAge)
				s.Buffer[k] = b
			}
		}
		norm[i] = s
	}
	b, err := json.Marshal(norm)
	if err != nil { // unreachable: every value encoding/json refuses was normalised above
		return append(dst, "[]"...)
	}
	return append(dst, b...)
}

func finiteOrZero(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
