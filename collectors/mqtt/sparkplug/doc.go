// Package sparkplug holds the Go types of the Sparkplug B payload, generated from sparkplug_b.proto
// (written from the Eclipse Sparkplug 3.0 specification) with protoc-gen-go v1.36.12.
package sparkplug

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative sparkplug_b.proto
