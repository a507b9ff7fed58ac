package mqtt

import (
	"encoding/binary"
	"sync"

	"github.com/cespare/xxhash/v2"
	paho "github.com/eclipse/paho.mqtt.golang"
)

// recentAcks remembers digests of the last QoS >= 1 messages whose samples were made durable. The
// broker resends a message it has no PUBACK for with the DUP flag (after our crash, its restart, or a
// lost connection); one we already stored is then acknowledged again without being stored twice.
// The digests of this process's stores are journaled with the samples themselves (stored.go), so a
// crash between the durable write and the PUBACK does not make the redelivery look new.
//
// A message still on its way to the buffer counts too: when paho reconnects by itself (the session
// generation unchanged) the broker resends what it has no PUBACK for, maybe before the first copy's
// Emit returned. The PUBACK of the first copy went to the dead connection; the copy's, sent after
// the first copy is durable, is the one the broker gets.
type recentAcks struct {
	mu   sync.Mutex
	set  map[uint64]int // digest -> copies of it in ring
	ring []uint64
	next int
	// pending: digests of messages mapped into a batch not yet durable, with the generation of the
	// session they came in (a reset session's messages are redelivered and must be stored).
	pending map[uint64]uint64
}

func newRecentAcks(size int) *recentAcks {
	return &recentAcks{set: make(map[uint64]int, size), ring: make([]uint64, size), pending: map[uint64]uint64{}}
}

// messageDigest names one delivery: packet id, topic and payload. A redelivery keeps its packet id
// (MQTT-4.4.0-1), so a publisher repeating a payload under another id is never mistaken for one.
// The hash is unseeded: digests are compared across restarts.
func messageDigest(m paho.Message) uint64 {
	var h xxhash.Digest
	h.Reset()
	var id [2]byte
	binary.BigEndian.PutUint16(id[:], m.MessageID())
	_, _ = h.Write(id[:])
	_, _ = h.WriteString(m.Topic())
	_, _ = h.Write([]byte{0})
	_, _ = h.Write(m.Payload())
	return h.Sum64()
}

// seen reports whether m is a redelivery (DUP) of a message stored recently, or being stored by a
// batch of session generation gen; d is its digest.
func (r *recentAcks) seen(m paho.Message, d, gen uint64) bool {
	if !m.Duplicate() {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set[d] > 0 {
		return true
	}
	g, ok := r.pending[d]
	return ok && g == gen
}

// hold records the digest of a message mapped into a batch of session generation gen.
func (r *recentAcks) hold(d, gen uint64) {
	r.mu.Lock()
	r.pending[d] = gen
	r.mu.Unlock()
}

// release forgets digests held for a batch that will not be stored.
func (r *recentAcks) release(ds []uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range ds {
		delete(r.pending, d)
	}
}

// add records digests of stored messages, forgetting the oldest beyond the ring's size.
func (r *recentAcks) add(ds []uint64) {
	if len(ds) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range ds {
		delete(r.pending, d)
		if old := r.ring[r.next]; old != 0 {
			if r.set[old]--; r.set[old] <= 0 {
				delete(r.set, old)
			}
		}
		r.ring[r.next] = d
		r.set[d]++
		r.next = (r.next + 1) % len(r.ring)
	}
}
