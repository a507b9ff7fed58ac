package signal

import (
	"encoding/json"
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

// CollectorState is the health of one collector.
type CollectorState struct {
	State    string `json:"state"` // starting, running, backoff, failed, stopped
	Error    string `json:"error,omitempty"`
	Restarts uint64 `json:"restarts"`
	Samples  uint64 `json:"samples"`
}

// AppendStatusJSON appends statuses as a JSON array. Heartbeats are rare; encoding/json is fine here.
func AppendStatusJSON(dst []byte, st []Status) []byte {
	if st == nil {
		st = []Status{}
	}
	b, err := json.Marshal(st)
	if err != nil { // cannot happen for these types
		return append(dst, "[]"...)
	}
	return append(dst, b...)
}
