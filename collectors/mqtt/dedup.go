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
type recentAcks struct {
	mu   sync.Mutex
	set  map[uint64]struct{}
	ring []uint64
	next int
}

func newRecentAcks(size int) *recentAcks {
	return &recentAcks{set: make(map[uint64]struct{}, size), ring: make([]uint64, size)}
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

// seen reports whether m is a redelivery (DUP) of a message stored recently; d is its digest.
func (r *recentAcks) seen(m paho.Message, d uint64) bool {
	if !m.Duplicate() {
		return false
	}
	r.mu.Lock()
	_, ok := r.set[d]
	r.mu.Unlock()
	return ok
}

// add records digests of stored messages, forgetting the oldest beyond the ring's size.
func (r *recentAcks) add(ds []uint64) {
	if len(ds) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range ds {
		if old := r.ring[r.next]; old != 0 {
			delete(r.set, old)
		}
		r.ring[r.next] = d
		r.set[d] = struct{}{}
		r.next = (r.next + 1) % len(r.ring)
	}
}
