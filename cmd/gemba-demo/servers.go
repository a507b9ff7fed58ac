package main

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/nats-io/nats-server/v2/server"
)

// startNATS runs an embedded NATS server with JetStream on loopback.
func startNATS(port int, storeDir string) (*server.Server, error) {
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: storeDir,
		NoLog: true, NoSigs: true,
	})
	if err != nil {
		return nil, err
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("not ready after 10s")
	}
	return s, nil
}

// startBroker runs an embedded MQTT broker (mochi) on loopback that accepts every client.
func startBroker(port int) (*mqtt.Server, error) {
	s := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, err
	}
	l := listeners.NewTCP(listeners.Config{ID: "demo", Address: fmt.Sprintf("127.0.0.1:%d", port)})
	if err := s.AddListener(l); err != nil {
		return nil, err
	}
	go func() { _ = s.Serve() }()
	return s, nil
}
