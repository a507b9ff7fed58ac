package collectors

import (
	"encoding/json"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/gemba-io/gemba/config"
)

// Spec is one entry of the config's collectors list: the keys every collector has, plus the
// type-specific settings decoded over the type's defaults.
type Spec struct {
	Name     string
	Type     string
	Disabled bool
	// Settings is the pointer returned by the type's Factory.NewConfig, filled from the YAML.
	Settings any
}

var commonKeys = []string{"name", "type", "disabled"}

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// UnmarshalConfig implements config.Unmarshaler: it reads the common keys, looks the type up in the
// registry and decodes the remaining keys strictly into the type's config.
func (s *Spec) UnmarshalConfig(d *config.Decoder, n *yaml.Node, path string) {
	if n.Kind != yaml.MappingNode {
		d.Errorf(n, path, "expected a collector mapping with name and type")
		return
	}
	var common struct {
		Name     string `yaml:"name"`
		Type     string `yaml:"type"`
		Disabled bool   `yaml:"disabled"`
	}
	var rest yaml.Node = *n
	rest.Content = nil
	var commonNode yaml.Node = *n
	commonNode.Content = nil
	for i := 0; i+1 < len(n.Content); i += 2 {
		if contains(commonKeys, n.Content[i].Value) {
			commonNode.Content = append(commonNode.Content, n.Content[i], n.Content[i+1])
		} else {
			rest.Content = append(rest.Content, n.Content[i], n.Content[i+1])
		}
	}
	d.DecodeMapping(&commonNode, path, &common)
	s.Name, s.Type, s.Disabled = common.Name, common.Type, common.Disabled
	switch {
	case s.Name == "":
		d.Errorf(n, config.Join(path, "name"), "required: every collector needs a unique name")
	case !nameRe.MatchString(s.Name):
		// The name is a directory under agent.data_dir and the source label of its metrics.
		d.Errorf(n, config.Join(path, "name"), "%q: letters, digits, '_', '-' and '.' only, starting with a letter or digit, at most 64", s.Name)
	}
	if s.Type == "" {
		d.Errorf(n, config.Join(path, "type"), "required (one of: %s)", strings.Join(Types(), ", "))
		return
	}
	f, ok := Lookup(s.Type)
	if !ok {
		d.Errorf(nil, config.Join(path, "type"), "unknown collector type %q (one of: %s)", s.Type, strings.Join(Types(), ", "))
		return
	}
	s.Settings = f.NewConfig()
	d.DecodeMapping(&rest, path, s.Settings, commonKeys...)
}

// MarshalJSON renders the spec for the effective config (and its version hash).
func (s Spec) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		Disabled bool   `json:"disabled,omitempty"`
		Settings any    `json:"settings"`
	}{s.Name, s.Type, s.Disabled, s.Settings})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
