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
	if r.seen(redelivery, messageDigest(redelivery)) {
		t.Fatal("a message never stored counts as seen")
	}
	r.add([]uint64{messageDigest(a)})
	if r.seen(a, messageDigest(a)) {
		t.Fatal("a first delivery (no DUP flag) must never be dropped, even with the same content")
	}
	if !r.seen(redelivery, messageDigest(redelivery)) {
		t.Fatal("a redelivery of a stored message was not recognised")
	}
	other := redelivery
	other.topic = "t/b"
	if r.seen(other, messageDigest(other)) {
		t.Fatal("same payload on another topic counts as seen")
	}
	other = redelivery
	other.id = 8
	if r.seen(other, messageDigest(other)) {
		t.Fatal("same payload under another packet id counts as seen")
	}
	// The ring forgets the oldest beyond its size.
	for i := range 4 {
		m := fakeMsg{topic: "t/fill", payload: string(rune('a' + i))}
		r.add([]uint64{messageDigest(m)})
	}
	if r.seen(redelivery, messageDigest(redelivery)) {
		t.Fatal("an evicted digest is still seen")
	}
}
