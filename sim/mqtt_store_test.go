package sim

import (
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// paho's resume sets DUP on what the store's Get returns while the connection's writer may be
// packing the packet a publish put there: the store must hand out a packet of its own.
func TestStoreHandsOutACopyOfAPublish(t *testing.T) {
	s := copyStore{paho.NewMemoryStore()}
	s.Open()
	defer s.Close()
	sent := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	sent.Qos, sent.MessageID, sent.TopicName, sent.Payload = 1, 7, "spBv1.0/g/DDATA/n/d", []byte("x")
	s.Put("o.7", sent)

	got, ok := s.Get("o.7").(*packets.PublishPacket)
	if !ok {
		t.Fatalf("Get returned %T, want the stored publish", s.Get("o.7"))
	}
	got.Dup = true // what resume does
	if sent.Dup {
		t.Fatal("setting DUP on what Get returned changed the packet being sent")
	}
	if got.MessageID != 7 || got.TopicName != sent.TopicName || string(got.Payload) != "x" || got.Qos != 1 {
		t.Fatalf("copy %+v differs from the stored publish", got)
	}
	if s.Get("o.8") != nil {
		t.Fatal("a missing key returned a packet")
	}
}
