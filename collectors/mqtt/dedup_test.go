package mqtt

import (
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// fakeMsg is a paho.Message for testing the dedup logic alone.
type fakeMsg struct {
	topic   string
	payload string
	dup     bool
}

func (m fakeMsg) Duplicate() bool   { return m.dup }
func (m fakeMsg) Qos() byte         { return 1 }
func (m fakeMsg) Retained() bool    { return false }
func (m fakeMsg) Topic() string     { return m.topic }
func (m fakeMsg) MessageID() uint16 { return 1 }
func (m fakeMsg) Payload() []byte   { return []byte(m.payload) }
func (m fakeMsg) Ack()              {}

func TestRecentAcksDropsOnlyRedeliveriesOfAckedMessages(t *testing.T) {
	r := newRecentAcks(4)
	a := fakeMsg{topic: "t/a", payload: `{"v":1}`}
	if r.seen(fakeMsg{topic: a.topic, payload: a.payload, dup: true}) {
		t.Fatal("a message never acknowledged counts as seen")
	}
	r.add([]paho.Message{a})
	if r.seen(a) {
		t.Fatal("a first delivery (no DUP flag) must never be dropped, even with the same content")
	}
	if !r.seen(fakeMsg{topic: a.topic, payload: a.payload, dup: true}) {
		t.Fatal("a redelivery of an acknowledged message was not recognised")
	}
	if r.seen(fakeMsg{topic: "t/b", payload: a.payload, dup: true}) {
		t.Fatal("same payload on another topic counts as seen")
	}
	// The ring forgets the oldest beyond its size.
	for i := range 4 {
		r.add([]paho.Message{fakeMsg{topic: "t/fill", payload: string(rune('a' + i))}})
	}
	if r.seen(fakeMsg{topic: a.topic, payload: a.payload, dup: true}) {
		t.Fatal("an evicted digest is still seen")
	}
}
