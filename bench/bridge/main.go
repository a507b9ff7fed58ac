// Command bridge is the baseline of `make bench-e2e`: the smallest MQTT to NATS forwarder one would
// write (paho subscribe, NATS publish per message, no buffer, no batching, no durability). gemba-agent
// is measured against it.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
)

func main() {
	broker := flag.String("mqtt", "tcp://127.0.0.1:1883", "MQTT broker")
	topic := flag.String("topic", "bench/#", "topic filter (QoS 1)")
	natsURL := flag.String("nats", nats.DefaultURL, "NATS server")
	subject := flag.String("subject", "bench.samples", "subject to publish to (a JetStream stream captures it)")
	flag.Parse()
	if err := run(*broker, *topic, *natsURL, *subject); err != nil {
		fmt.Fprintln(os.Stderr, "bridge:", err)
		os.Exit(1)
	}
}

func run(broker, topic, natsURL, subject string) error {
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	o := paho.NewClientOptions().AddBroker(broker).SetClientID("bench-bridge").SetCleanSession(true).
		SetOrderMatters(false).SetConnectTimeout(5 * time.Second)
	o.SetDefaultPublishHandler(func(paho.Client, paho.Message) {})
	c := paho.NewClient(o)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return fmt.Errorf("mqtt connect: %v", t.Error())
	}
	defer c.Disconnect(250)
	// Publish straight through: the broker's message is acknowledged on return whatever NATS did.
	if t := c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		_ = nc.Publish(subject, m.Payload())
	}); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return fmt.Errorf("subscribe: %v", t.Error())
	}
	fmt.Println("READY")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	return nc.Flush()
}
