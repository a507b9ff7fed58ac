// Package chaos is gemba's fault suite: a real agent (a separate process) under load from the
// simulator, while NATS stops, the agent is SIGKILLed and restarted, the MQTT broker and the OPC UA
// server restart and the buffer overflows; each scenario then counts the stream and fails on any
// acknowledged sample that is missing or duplicated. `go test` runs short versions; `make chaos`
// (cmd chaos/cmd/gemba-chaos) runs the full ones.
package chaos
