// Package hubbench measures gemba-hub against the targets of issue 13 on a real embedded NATS server:
// ingest throughput into the feature store, publish→store latency, and the hub process's RSS.
package hubbench
