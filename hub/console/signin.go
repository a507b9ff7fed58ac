package console

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Sign-in bounds. A password check is a bcrypt run (tens of milliseconds of a core): unbounded,
// unauthenticated requests could keep the hub's cores from its decisions, or try passwords as fast
// as the cores allow.
const (
	// signInFailures wrong sign-ins from one address within signInWindow refuse its next ones
	// (429, Retry-After) until the oldest of them is that old.
	signInFailures = 10
	signInWindow   = 10 * time.Minute
	// signInQueue is how many sign-ins may wait for the one password check that runs at a time;
	// more get 429 at once.
	signInQueue = 8
	// signInAddresses bounds the addresses remembered; past it the oldest failures are forgotten.
	signInAddresses = 10000
)

// signIns throttles sign-in: one password check at a time, and signInFailures per address.
type signIns struct {
	now     func() time.Time
	run     chan struct{} // one password check at a time
	waiting chan struct{} // sign-ins queued for it

	mu    sync.Mutex
	fails map[string][]time.Time // by remote address: times of recent failures, oldest first
}

func newSignIns(now func() time.Time) *signIns {
	return &signIns{now: now, run: make(chan struct{}, 1), waiting: make(chan struct{}, signInQueue), fails: map[string][]time.Time{}}
}

// address is the client's address as the listener saw it (behind a proxy, the proxy's: its
// clients then share one budget).
func address(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// refused reports how long addr must wait before its next sign-in (0: it may sign in now).
func (s *signIns) refused(addr string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.recent(addr)
	if len(f) < signInFailures {
		return 0
	}
	return f[len(f)-signInFailures].Add(signInWindow).Sub(s.now())
}

// recent drops addr's failures older than the window and returns the rest. s.mu must be held.
func (s *signIns) recent(addr string) []time.Time {
	f := s.fails[addr]
	cut := s.now().Add(-signInWindow)
	i := 0
	for i < len(f) && !f[i].After(cut) {
		i++
	}
	if f = f[i:]; len(f) == 0 {
		delete(s.fails, addr)
		return nil
	}
	s.fails[addr] = f
	return f
}

// failed records a wrong sign-in from addr.
func (s *signIns) failed(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.fails[addr]; !ok && len(s.fails) >= signInAddresses {
		for a := range s.fails {
			s.recent(a) // drops the addresses whose failures all expired
		}
		for a := range s.fails { // still full: forget any
			if len(s.fails) < signInAddresses {
				break
			}
			delete(s.fails, a)
		}
	}
	f := append(s.recent(addr), s.now())
	if len(f) > signInFailures {
		f = f[len(f)-signInFailures:]
	}
	s.fails[addr] = f
}

// check runs fn once it is the only password check running; false when too many sign-ins wait
// already or ctx ends first.
func (s *signIns) check(ctx context.Context, fn func()) bool {
	select {
	case s.waiting <- struct{}{}:
	default:
		return false
	}
	defer func() { <-s.waiting }()
	select {
	case s.run <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	defer func() { <-s.run }()
	fn()
	return true
}

// tooMany answers 429 with when to try again.
func (c *Console) tooMany(w http.ResponseWriter, r *http.Request, wait time.Duration, msg string) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(wait.Round(time.Second).Seconds()))))
	c.fail(w, r, http.StatusTooManyRequests, msg)
}
