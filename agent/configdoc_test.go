package agent

import (
	"reflect"
	"testing"

	"github.com/gemba-io/gemba/collectors"
	"github.com/gemba-io/gemba/collectors/mqtt"
	"github.com/gemba-io/gemba/collectors/opcua"
	"github.com/gemba-io/gemba/internal/doccheck"
)

// agentKeys is every key of the agent's config file: the yaml tags reachable from Config, a
// collector entry's common keys and every registered type's settings.
func agentKeys() doccheck.Keys {
	common := reflect.TypeFor[struct {
		Name     string `yaml:"name"`
		Type     string `yaml:"type"`
		Disabled bool   `yaml:"disabled"`
	}]()
	spec := []reflect.Type{common, reflect.TypeFor[opcua.Config](), reflect.TypeFor[mqtt.Config]()}
	return doccheck.KeysOf(reflect.TypeFor[Config](), map[reflect.Type][]reflect.Type{reflect.TypeFor[collectors.Spec](): spec})
}

// TestConfigReferenceMatchesCode: docs/configuration.md names every key of the agent's config
// (tables, "`key` (default)" prose and yaml examples), names no key the agent does not read, and
// every default its tables state is the default of an empty file.
func TestConfigReferenceMatchesCode(t *testing.T) {
	cfg, err := Parse([]byte("agent: {site: plant1}\n"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	doccheck.CheckConfigReference(t, "../docs/configuration.md", agentKeys(), map[string]string{
		// The example's group says `nodes: [...]`: a group's nodes are the collector's nodes.
		"collectors.groups.nodes.": "documented as collectors.nodes",
	}, *cfg)
}

// TestExampleUsesEveryOption: configs/agent.example.yaml uses every option, as
// docs/configuration.md says (alternatives and files that must exist as comments).
func TestExampleUsesEveryOption(t *testing.T) {
	doccheck.CheckExampleUsesEveryKey(t, "../configs/agent.example.yaml", agentKeys(), map[string]string{
		"collectors.groups.nodes.": "a group's nodes are the collector's nodes",
	})
}
