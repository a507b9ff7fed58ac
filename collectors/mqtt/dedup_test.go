package mqtt

import (
	"testing"
)

// fakeMsg is a paho.Message for testing the dedup logic alone.
type fakeMsg struct {
	topic   string
	payload string
	dup     bool
	id      uint16
}

func (m fakeMsg) Duplicate() bool   { return m.dup }
func (m fakeMsg) Qos() byte         { return 1 }
func (m fakeMsg) Retained() bool    { return false }
func (m fakeMsg) Topic() string     { return m.topic }
func (m fakeMsg) MessageID() uint16 { return m.id }
func (m fakeMsg) Payload() []byte   { return []byte(m.payload) }
func (m fakeMsg) Ack()              {}

func TestRecentAcksDropsOnlyRedeliveriesOfStoredMessages(t *testing.T) {
	r := newRecentAcks(4)
	a := fakeMsg{topic: "t/a", payload: `{"v":1}`, id: 7}
	redelivery := a
	redelivery.dup = true
	if r.seen(redelivery, messageDigest(redelivery), 0) {
		t.Fatal("a message never stored counts as seen")
	}
	r.add([]uint64{messageDigest(a)})
	if r.seen(a, messageDigest(a), 0) {
		t.Fatal("a first delivery (no DUP flag) must never be dropped, even with the same content")
	}
	if !r.seen(redelivery, messageDigest(redelivery), 0) {
		t.Fatal("a redelivery of a stored message was not recognised")
	}
	other := redelivery
	other.topic = "t/b"
	if r.seen(other, messageDigest(other), 0) {
		t.Fatal("same payload on another topic counts as seen")
	}
	other = redelivery
	other.id = 8
	if r.seen(other, messageDigest(other), 0) {
		t.Fatal("same payload under another packet id counts as seen")
	}
	// The ring forgets the oldest beyond its size.
	for i := range 4 {
		m := fakeMsg{topic: "t/fill", payload: string(rune('a' + i))}
		r.add([]uint64{messageDigest(m)})
	}
	if r.seen(redelivery, messageDigest(redelivery), 0) {
		t.Fatal("an evicted digest is still seen")
	}
}

// TestRecentAcksKeepsADigestStoredTwice: the same packet id, topic and payload stored again (a
// broker reusing ids, a sensor repeating its value) is in the ring twice; evicting the older copy
// must not forget the newer one, whose redelivery would then be stored a second time.
func TestRecentAcksKeepsADigestStoredTwice(t *testing.T) {
	r := newRecentAcks(4)
	a := fakeMsg{topic: "t/a", payload: "1", id: 1}
	redelivery := a
	redelivery.dup = true
	d := messageDigest(a)
	fill := func(s string) uint64 { return messageDigest(fakeMsg{topic: "t/fill", payload: s}) }
	r.add([]uint64{d, fill("x"), d, fill("y")})
	r.add([]uint64{fill("z")}) // evicts the first copy of d only
	if !r.seen(redelivery, d, 0) {
		t.Fatal("the redelivery of a message stored 3 messages ago was not recognised: evicting an older copy of its digest forgot it")
	}
}
