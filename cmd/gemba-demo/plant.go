package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// plant publishes telemetry for 2 lines x 2 machines over MQTT QoS 1. Each message carries four
// fields (temperature, parts, state, sku), so it becomes four samples in the agent. Only messages the
// broker acknowledged (PUBACK) are counted as published.
type plant struct {
	client  paho.Client
	samples atomic.Uint64
	stop    chan struct{}
	wg      sync.WaitGroup
}

type machine struct {
	line, name string
	state      string
	until      time.Time
	parts      int64
	sku        string
	temp       float64
	rng        *rand.Rand
}

var skus = []string{"A-100", "A-200", "B-300"}

func (m *machine) step(now time.Time, dt float64) {
	if now.After(m.until) {
		r := m.rng.Float64()
		switch {
		case r < 0.75:
			m.state = "running"
		case r < 0.85:
			m.state = "idle"
		case r < 0.95:
			m.state = "changeover"
			m.sku = skus[m.rng.IntN(len(skus))]
		default:
			m.state = "down"
		}
		m.until = now.Add(time.Duration(2+m.rng.IntN(6)) * time.Second)
	}
	target := 40.0
	if m.state == "running" {
		target = 72
		if m.rng.Float64() < dt*4 { // about 4 parts a second
			m.parts++
		}
	}
	m.temp += (target-m.temp)*0.05 + m.rng.NormFloat64()*0.3
}

func startPlant(broker string, rate int) (*plant, error) {
	o := paho.NewClientOptions().AddBroker(broker).SetClientID("gemba-demo-plant").
		SetConnectTimeout(2 * time.Second).SetAutoReconnect(true).SetMaxReconnectInterval(time.Second)
	c := paho.NewClient(o)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("connect %s: %v", broker, t.Error())
	}
	p := &plant{client: c, stop: make(chan struct{})}
	seed := uint64(1)
	for _, line := range []string{"line1", "line2"} {
		for _, name := range []string{"press", "weld"} {
			seed++
			m := &machine{line: line, name: name, sku: skus[seed%3], temp: 40, rng: rand.New(rand.NewPCG(seed, 42))}
			p.wg.Add(1)
			go p.run(m, rate)
		}
	}
	return p, nil
}

func (p *plant) run(m *machine, rate int) {
	defer p.wg.Done()
	topic := fmt.Sprintf("plant/%s/%s/telemetry", m.line, m.name)
	period := time.Second / time.Duration(max(rate, 1))
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			m.step(now, period.Seconds())
			payload, _ := json.Marshal(map[string]any{
				"ts": now.UnixMilli(), "temperature": math.Round(m.temp*100) / 100,
				"parts": m.parts, "state": m.state, "sku": m.sku,
			})
			tok := p.client.Publish(topic, 1, false, payload)
			if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
				p.samples.Add(4)
			}
		}
	}
}

// Samples is the number of samples in messages the broker acknowledged.
func (p *plant) Samples() uint64 { return p.samples.Load() }

// Stop stops publishing and waits for outstanding acknowledgements.
func (p *plant) Stop() {
	close(p.stop)
	p.wg.Wait()
	p.client.Disconnect(250)
}
