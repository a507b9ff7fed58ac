package hub

import (
	"reflect"
	"testing"

	"github.com/gemba-io/gemba/hub/decide/guard"
	"github.com/gemba-io/gemba/internal/doccheck"
)

// TestHubConfigReferenceMatchesCode: docs/hub-configuration.md names every key of the hub's config
// (tables, "`key` (default)" prose and yaml examples), names no key the hub does not read, and every
// default it states is what a file with only a guard section gives (the decision room on, so guard
// and act have their defaults too), as decoded or as used.
func TestHubConfigReferenceMatchesCode(t *testing.T) {
	cfg, err := Parse([]byte("guard: {max_discount: 10}\n"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	// As decoded: sections whose replicas are 0 take nats.replicas.
	decoded := DefaultConfig()
	decoded.Guard = &guard.Config{}
	*decoded.Guard = guard.DefaultConfig()
	decoded.Guard.Replicas = 0
	// As used: the model registry fills its bucket names when it opens them, the decision room the
	// outbox's owner (hub/decisions.go).
	used := *cfg
	used.Learn.Buckets.Defaults()
	a := *cfg.Act
	a.Owner = cfg.Hub.ID
	used.Act = &a
	doccheck.CheckConfigReference(t, "../docs/hub-configuration.md", doccheck.KeysOf(reflect.TypeFor[Config](), nil), nil, decoded, used)
}

// TestExampleListsEveryOption: configs/hub.example.yaml lists every option, as
// docs/hub-configuration.md says (alternatives and secrets as comments).
func TestExampleListsEveryOption(t *testing.T) {
	doccheck.CheckExampleUsesEveryKey(t, "../configs/hub.example.yaml", doccheck.KeysOf(reflect.TypeFor[Config](), nil), nil)
}
