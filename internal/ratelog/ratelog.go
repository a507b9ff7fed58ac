// Package ratelog holds a logger that writes at most one line per key and interval, for problems
// that repeat per message (a bad payload, a wrong source clock) and would otherwise flood the log.
package ratelog

import (
	"log/slog"
	"sync"
	"time"
)

// maxKeys bounds memory when keys come from the data (topics, signal names): past it the
// intervals start afresh, which at worst logs a few lines more.
const maxKeys = 10000

// Logger logs at most one line per key and interval, and says how many it held back.
type Logger struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time
	mu    sync.Mutex
	keys  map[string]*entry
}

type entry struct {
	last       time.Time
	suppressed int
}

// New returns a Logger writing to log at most once per key and interval.
func New(log *slog.Logger, every time.Duration) *Logger {
	return &Logger{log: log, every: every, now: time.Now, keys: map[string]*entry{}}
}

// SetInterval changes the interval (tests stretch it so a slow machine cannot split a burst).
func (r *Logger) SetInterval(every time.Duration) {
	r.mu.Lock()
	r.every = every
	r.mu.Unlock()
}

// Warn logs msg at WARN unless a line with this key was logged less than the interval ago. The
// first line after a quiet spell carries suppressed=N, the number held back.
func (r *Logger) Warn(key, msg string, args ...any) {
	r.mu.Lock()
	e := r.keys[key]
	if e == nil {
		if len(r.keys) >= maxKeys {
			clear(r.keys)
		}
		e = &entry{}
		r.keys[key] = e
	}
	now := r.now()
	if !e.last.IsZero() && now.Sub(e.last) < r.every {
		e.suppressed++
		r.mu.Unlock()
		return
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	r.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	r.log.Warn(msg, args...)
}
