package agent

import (
	"strings"
	"sync"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// liveStates are the heartbeat collector states in which a collector receives its sources' data:
// a signal it reports nothing for is unchanged (OPC UA reports by exception), not missing.
var liveStates = map[string]bool{signal.CollectorRunning: true, signal.CollectorDegraded: true}

// liveTTL is how long a collector's state is reused: the feature engine asks once per idle
// signal and tick, and an OPC UA collector's state walks all its nodes.
const liveTTL = time.Second

// sourceLive is the feature engine's Options.Live: whether the collector named in a sample Source
// ("collector:node" or "collector:topic") is connected. A source naming no collector is live.
type sourceLive struct {
	sups func() []*supervisor
	now  func() time.Time
	mu   sync.Mutex
	memo map[string]liveMemo
}

type liveMemo struct {
	live bool
	at   time.Time
}

func (l *sourceLive) Live(source string) bool {
	var sup *supervisor
	for _, s := range l.sups() {
		if strings.HasPrefix(source, s.name+":") && (sup == nil || len(s.name) > len(sup.name)) {
			sup = s
		}
	}
	if sup == nil {
		return true
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if m, ok := l.memo[sup.name]; ok && now.Sub(m.at) < liveTTL {
		return m.live
	}
	live := liveStates[sup.status().State]
	if l.memo == nil {
		l.memo = map[string]liveMemo{}
	}
	l.memo[sup.name] = liveMemo{live, now}
	return live
}
