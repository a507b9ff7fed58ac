package mqtt

import (
	"hash/maphash"
	"sync"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// recentAcks remembers digests of the last QoS >= 1 messages this process acknowledged. A broker that
// restarts before it has recorded our PUBACK sends such a message again with the DUP flag; one we
// already made durable and acknowledged is then acknowledged again without being stored twice.
// It lives in memory: after an agent crash the broker's redeliveries are stored again (MQTT is
// at-least-once there; the hub dedupes on signal and source time).
type recentAcks struct {
	seed maphash.Seed
	mu   sync.Mutex
	set  map[uint64]struct{}
	ring []uint64
	next int
}

func newRecentAcks(size int) *recentAcks {
	return &recentAcks{seed: maphash.MakeSeed(), set: make(map[uint64]struct{}, size), ring: make([]uint64, size)}
}

func (r *recentAcks) digest(m paho.Message) uint64 {
	var h maphash.Hash
	h.SetSeed(r.seed)
	h.WriteString(m.Topic())
	h.WriteByte(0)
	h.Write(m.Payload())
	return h.Sum64()
}

// seen reports whether a redelivered message is one we acknowledged recently.
func (r *recentAcks) seen(m paho.Message) bool {
	if !m.Duplicate() {
		return false
	}
	d := r.digest(m)
	r.mu.Lock()
	_, ok := r.set[d]
	r.mu.Unlock()
	return ok
}

// add records acknowledged messages, forgetting the oldest beyond the ring's size.
func (r *recentAcks) add(ms []paho.Message) {
	if len(ms) == 0 {
		return
	}
	ds := make([]uint64, len(ms))
	for i, m := range ms {
		ds[i] = r.digest(m)
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
