package buffer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gemba-io/gemba/signal"
)

// Memory is an in-memory Buffer with the same caps, policies and ordering as Store but no
// durability: for tests of other packages and for the conformance suite. max_bytes counts payload
// plus the same per-record overhead estimate the Store uses; 0 means no cap. An empty WhenFull is
// drop_oldest. max_age is applied whenever the buffer is used.
type Memory struct {
	cfg Config

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	q       [signal.NumStreams][]memRec
	st      [signal.NumStreams]streamState
	drops   [signal.NumStreams]map[string]uint64
	used    int64
	full    bool
	wake    [signal.NumStreams]chan struct{}
	space   chan struct{}
	meta    map[string][]byte
	// incarnation is new for every Memory: its records do not survive the process.
	incarnation string
}

type memRec struct {
	seq  uint64
	t    time.Time
	data []byte
}

// NewMemory returns an empty in-memory buffer.
func NewMemory(cfg Config) *Memory {
	if cfg.WhenFull == "" {
		cfg.WhenFull = DropOldest
	}
	m := &Memory{cfg: cfg, closing: make(chan struct{}), space: make(chan struct{}), meta: map[string][]byte{},
		incarnation: newIncarnation()}
	for i := range m.wake {
		m.wake[i] = make(chan struct{})
		m.drops[i] = map[string]uint64{}
	}
	return m
}

// Append implements Buffer.
func (m *Memory) Append(ctx context.Context, stream signal.Stream, records ...[]byte) ([]uint64, error) {
	if err := checkStream(stream); err != nil {
		return nil, err
	}
	var need int64
	for i, r := range records {
		if len(r) > maxRecord {
			return nil, fmt.Errorf("buffer: record %d of %d is %d bytes, above the %d-byte limit", i, len(records), len(r), maxRecord)
		}
		need += int64(len(r) + entryOverhead)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if limit := int64(m.cfg.MaxBytes); limit > 0 && need > limit {
		m.drops[stream]["full"] += uint64(len(records))
		return nil, fmt.Errorf("%w: %d records of %d bytes do not fit in max_bytes %d", ErrFull, len(records), need, limit)
	}
	for {
		if m.closed {
			return nil, ErrClosed
		}
		now := time.Now()
		m.expireLocked(now)
		limit := int64(m.cfg.MaxBytes)
		if limit <= 0 || m.used+need <= limit {
			m.full = false
			break
		}
		m.full = true
		switch m.cfg.WhenFull {
		case DropNewest:
			m.drops[stream]["full"] += uint64(len(records))
			return nil, fmt.Errorf("%w: %d of %d bytes used (max_bytes)", ErrFull, m.used, limit)
		case Block:
			space := m.space
			m.mu.Unlock()
			select {
			case <-space:
			case <-ctx.Done():
				m.mu.Lock()
				return nil, fmt.Errorf("%w: %w", ErrFull, ctx.Err())
			case <-m.closing:
			}
			m.mu.Lock()
			continue
		}
		if !m.evictLocked(m.used + need - limit) {
			m.drops[stream]["full"] += uint64(len(records))
			return nil, fmt.Errorf("%w: %d bytes do not fit in max_bytes %d", ErrFull, need, limit)
		}
		break
	}
	if len(records) == 0 {
		return nil, nil
	}
	now := time.Now()
	st := &m.st[stream]
	seqs := make([]uint64, len(records))
	for i, r := range records {
		st.last++
		seqs[i] = st.last
		m.q[stream] = append(m.q[stream], memRec{seq: st.last, t: now, data: append([]byte(nil), r...)})
		st.count++
		st.bytes += uint64(len(r))
		m.used += int64(len(r) + entryOverhead)
	}
	m.refreshLocked(stream)
	close(m.wake[stream])
	m.wake[stream] = make(chan struct{})
	return seqs, nil
}

// evictLocked drops the oldest records (samples first) until target bytes are freed.
func (m *Memory) evictLocked(target int64) bool {
	var freed int64
	for _, s := range evictOrder {
		for freed < target && len(m.q[s]) > 0 {
			freed += m.popLocked(s, "max_bytes")
		}
	}
	return freed >= target
}

func (m *Memory) popLocked(s signal.Stream, reason string) int64 {
	r := m.q[s][0]
	m.q[s][0] = memRec{}
	m.q[s] = m.q[s][1:]
	st := &m.st[s]
	st.count--
	st.bytes -= uint64(len(r.data))
	st.head = r.seq
	n := int64(len(r.data) + entryOverhead)
	m.used -= n
	if reason != "" {
		m.drops[s][reason]++
	}
	m.refreshLocked(s)
	close(m.space)
	m.space = make(chan struct{})
	return n
}

func (m *Memory) refreshLocked(s signal.Stream) {
	st := &m.st[s]
	if len(m.q[s]) == 0 {
		st.first, st.oldest = 0, time.Time{}
		m.q[s] = nil
		return
	}
	st.first, st.oldest = m.q[s][0].seq, m.q[s][0].t
}

func (m *Memory) expireLocked(now time.Time) {
	if m.cfg.MaxAge <= 0 {
		return
	}
	// now and the records' times are time.Now readings: Before compares their monotonic clocks,
	// so a step of the wall clock ages nothing (the Store, whose times are in its keys, detects it).
	cutoff := now.Add(-m.cfg.MaxAge)
	for s := range signal.NumStreams {
		for len(m.q[s]) > 0 && m.q[s][0].t.Before(cutoff) {
			m.popLocked(s, "max_age")
		}
	}
}

// Read implements Buffer.
func (m *Memory) Read(ctx context.Context, stream signal.Stream, after uint64, max int) ([]signal.Record, error) {
	if err := checkStream(stream); err != nil {
		return nil, err
	}
	if max <= 0 {
		return nil, fmt.Errorf("buffer: read max %d must be positive", max)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		if m.closed {
			return nil, ErrClosed
		}
		m.expireLocked(time.Now())
		var out []signal.Record
		for _, r := range m.q[stream] {
			if r.seq > after {
				out = append(out, signal.Record{Seq: r.seq, Data: r.data})
				if len(out) == max {
					break
				}
			}
		}
		if len(out) > 0 {
			return out, nil
		}
		wake := m.wake[stream]
		m.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			m.mu.Lock()
			return nil, ctx.Err()
		case <-m.closing:
		}
		m.mu.Lock()
	}
}

// Ack implements Buffer.
func (m *Memory) Ack(stream signal.Stream, upTo uint64) error {
	if err := checkStream(stream); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	st := &m.st[stream]
	if upTo > st.last {
		return fmt.Errorf("buffer: ack %s up to %d beyond the last appended sequence %d", stream, upTo, st.last)
	}
	for len(m.q[stream]) > 0 && m.q[stream][0].seq <= upTo {
		m.popLocked(stream, "")
	}
	st.acked = max(st.acked, upTo)
	st.head = max(st.head, upTo)
	return nil
}

// Stats implements Buffer.
func (m *Memory) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.expireLocked(time.Now())
	}
	var out Stats
	for i, st := range m.st {
		d := make(map[string]uint64, len(m.drops[i]))
		for k, v := range m.drops[i] {
			d[k] = v
		}
		out.Streams[i] = StreamStats{Records: st.count, Bytes: st.bytes, Oldest: st.oldest, FirstSeq: st.first,
			LastSeq: st.last, Acked: st.acked, Dropped: d}
	}
	out.DiskSize, out.MaxBytes, out.Full = m.used, int64(m.cfg.MaxBytes), m.full
	return out
}

// LastSeq returns the last appended sequence of stream (0 for an unknown stream).
func (m *Memory) LastSeq(stream signal.Stream) uint64 {
	if checkStream(stream) != nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st[stream].last
}

// GetMeta returns a value stored with PutMeta.
func (m *Memory) GetMeta(key string) ([]byte, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, false, ErrClosed
	}
	v, ok := m.meta[key]
	return append([]byte(nil), v...), ok, nil
}

// PutMeta stores value under key.
func (m *Memory) PutMeta(key string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.meta[key] = append([]byte(nil), value...)
	return nil
}

// Close implements Buffer.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		close(m.closing)
	}
	return nil
}

// Incarnation is new for every Memory buffer (see Buffer.Incarnation).
func (m *Memory) Incarnation() string { return m.incarnation }
