package features

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"time"

	"github.com/gemba-io/gemba/config"
)

// KeyKind says what a feature value is kept per.
type KeyKind string

// Key kinds. line, machine and site are resolved through the knowledge graph from the signal;
// sku comes from the record's "sku" label (the agent's counters grouped by SKU); signal is the
// agent's signal name itself.
const (
	BySignal  KeyKind = "signal"
	ByMachine KeyKind = "machine"
	ByLine    KeyKind = "line"
	BySite    KeyKind = "site"
	BySKU     KeyKind = "sku"
)

// Definition maps an edge feature onto a hub feature: which agent signals and feature name feed
// it, what it is kept per, and how long a value stays fresh.
type Definition struct {
	// Name is the hub's name for the feature, used by rules and the API ([a-z0-9_]+).
	Name string `yaml:"name" json:"name"`
	// Signal is the agent signal name, or a pattern with * (path.Match) such as "*.pack.parts".
	Signal string `yaml:"signal" json:"signal"`
	// Feature is the agent's feature name (mean, p95, availability, units, ...).
	Feature string `yaml:"feature" json:"feature"`
	// Key is what a value is kept per: signal, machine, line, site or sku.
	Key KeyKind `yaml:"key" json:"key"`
	// MaxAge: a value whose window ended longer ago than this is stale and not usable as fresh.
	MaxAge time.Duration `yaml:"max_age" json:"max_age"`
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// Validate checks one definition.
func (d *Definition) Validate(r config.Report) {
	if !nameRE.MatchString(d.Name) {
		r.Errorf("name", "%q: want lower-case letters, digits and _ (a CEL identifier), starting with a letter", d.Name)
	}
	if d.Signal == "" {
		r.Errorf("signal", "required")
	} else if _, err := path.Match(d.Signal, ""); err != nil {
		r.Errorf("signal", "bad pattern %q: %v", d.Signal, err)
	}
	if d.Feature == "" {
		r.Errorf("feature", "required")
	}
	switch d.Key {
	case BySignal, ByMachine, ByLine, BySite, BySKU:
	default:
		r.Errorf("key", "%q is not one of signal, machine, line, site, sku", d.Key)
	}
	if d.MaxAge <= 0 {
		r.Errorf("max_age", "required and positive (how long a value counts as fresh)")
	}
}

// MarshalJSON writes max_age as a duration ("2m0s"), as the config reads it.
func (d Definition) MarshalJSON() ([]byte, error) {
	type plain Definition
	return json.Marshal(struct {
		plain
		MaxAge string `json:"max_age"`
	}{plain(d), d.MaxAge.String()})
}

// Definitions is the hub config's features section.
type Definitions []Definition

// Validate reports duplicate names.
func (ds Definitions) Validate(r config.Report) {
	seen := map[string]int{}
	for i, d := range ds {
		if j, ok := seen[d.Name]; ok && d.Name != "" {
			r.Errorf(config.Index(i)+".name", "%q is already defined at features[%d]", d.Name, j)
		}
		seen[d.Name] = i
	}
}

// Version is the hash of the definitions: it is stored with every value, so a value can be traced
// to the definitions it was computed under.
func (ds Definitions) Version() string {
	b, err := json.Marshal(ds)
	if err != nil {
		return "invalid"
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:6])
}

// Config is the store's configuration.
type Config struct {
	Bucket      string
	Replicas    int
	Definitions Definitions
	// MaxFuture refuses records whose window ends further ahead of the hub's clock (an agent with a
	// wrong clock): under "latest window wins" one would pin its key until then (0: DefaultMaxFuture).
	MaxFuture time.Duration
}

// DefaultMaxFuture is the clock skew between an agent and the hub the store tolerates.
const DefaultMaxFuture = 10 * time.Minute

func (c Config) check() error {
	if c.Bucket == "" {
		return fmt.Errorf("features: bucket name required")
	}
	return nil
}
