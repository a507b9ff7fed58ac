// Package collectors defines how protocol collectors plug into the agent: the Collector contract,
// the Emitter they hand samples to, and the registry of collector types with their config.
package collectors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gemba-io/gemba/signal"
)

// Emitter receives samples from a collector.
//
// Emit returns only when the samples are durable in the agent's buffer (or were deliberately dropped
// by the configured full-buffer policy, which is counted), so a collector may acknowledge its source
// (an MQTT PUBACK) as soon as Emit returns nil. Emit blocks under backpressure (policy "block") until
// ctx is done. It is safe for concurrent use, and it does not keep the slice after it returns.
type Emitter interface {
	Emit(ctx context.Context, samples []signal.Sample) error
}

// Collector reads one source (an OPC UA server, an MQTT broker) and emits samples.
//
// Lifecycle: the agent calls Run in its own goroutine. Run connects, collects and returns only when
// ctx is cancelled (then it returns nil after releasing every connection and goroutine it started)
// or when it fails. After a failure the agent calls Run again with capped exponential backoff, unless
// the error is Permanent (bad config, access denied), which is reported once and not retried until
// the config changes. Run must handle its own reconnects where the protocol allows; returning an
// error is for what it cannot heal itself. A Collector is used by one Run at a time.
type Collector interface {
	Run(ctx context.Context, emit Emitter) error
}

// Stater is implemented by collectors that report more than running/not running, e.g. per-node state.
type Stater interface {
	// State returns one of signal.CollectorStates ("running", "reconnecting"…) and details for /readyz.
	State() (state string, details map[string]string)
}

// PermanentError marks an error that retrying cannot fix.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err so the agent does not retry it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err is marked permanent.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// Deps is what the agent gives a collector when it builds one.
type Deps struct {
	Logger  *slog.Logger          // already carries collector=<name>
	Metrics prometheus.Registerer // already carries the collector=<name> label
	// DataDir is a directory this collector may keep state in (certificates, sessions).
	DataDir string
	// Agent is the agent id (stable MQTT client ids, OPC UA application names).
	Agent string
}

// Factory describes one collector type.
type Factory struct {
	// Type is the value of the config's "type" key.
	Type string
	// NewConfig returns the type's default config, a pointer to a struct the YAML is decoded over. It
	// may implement config.Validator.
	NewConfig func() any
	// New builds a collector from a decoded, validated config.
	New func(name string, cfg any, deps Deps) (Collector, error)
}

var (
	mu       sync.RWMutex
	registry = map[string]Factory{}
)

// Register adds a collector type. Collector packages call it from init.
func Register(f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[f.Type]; dup {
		panic("collectors: type registered twice: " + f.Type)
	}
	registry[f.Type] = f
}

// Lookup returns the factory of a type.
func Lookup(typ string) (Factory, bool) {
	mu.RLock()
	defer mu.RUnlock()
	f, ok := registry[typ]
	return f, ok
}

// Types lists the registered types, sorted.
func Types() []string {
	mu.RLock()
	defer mu.RUnlock()
	t := make([]string, 0, len(registry))
	for k := range registry {
		t = append(t, k)
	}
	sort.Strings(t)
	return t
}

// Build creates the collector a spec describes.
func Build(spec *Spec, deps Deps) (c Collector, err error) {
	f, ok := Lookup(spec.Type)
	if !ok {
		return nil, fmt.Errorf("collector %q: unknown type %q", spec.Name, spec.Type)
	}
	defer func() {
		// A constructor's bug takes down its collector (it stays down, with this error), not the
		// agent and every other collector with it, at start or at a reload.
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("collector %q: building it panicked: %v", spec.Name, r)
		}
	}()
	c, err = f.New(spec.Name, spec.Settings, deps)
	if err != nil {
		return nil, fmt.Errorf("collector %q: %w", spec.Name, err)
	}
	return c, nil
}

// SignalLister is implemented by collector configs whose signal names are known statically (not
// templated from payloads), so cross-checks such as a feature's "by" signal can be validated.
type SignalLister interface {
	Signals() []string
}

// SignalPatterner is implemented by collector configs whose signal names are templates (MQTT topics,
// Sparkplug metrics): SignalPatterns returns globs in which "*" stands for any text, dots included.
// A config that implements neither SignalLister nor SignalPatterner is assumed to produce any name.
type SignalPatterner interface {
	SignalPatterns() []string
}

// File is a file a collector opens when it connects (a CA, a certificate, a key), with the config
// field that names it relative to the collector ("tls.ca_file").
type File struct {
	Field, Path string
}

// FileLister is implemented by collector configs that name files, so that `validate` reports a
// missing or unreadable one at its line instead of the collector failing at its first connect.
type FileLister interface {
	Files() []File
}

// MatchGlob reports whether name matches pattern, where "*" matches any text (dots included) and
// every other character matches itself.
func MatchGlob(pattern, name string) bool {
	star := strings.IndexByte(pattern, '*')
	if star < 0 {
		return pattern == name
	}
	if !strings.HasPrefix(name, pattern[:star]) {
		return false
	}
	rest := pattern[star+1:]
	for i := star; i <= len(name); i++ {
		if MatchGlob(rest, name[i:]) {
			return true
		}
	}
	return false
}
