package main

import (
	"errors"
	"time"

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
