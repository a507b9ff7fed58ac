package opcua

import (
	"errors"
	"fmt"
	"strings"

	"github.com/gopcua/opcua/ua"
)

// nodeRef is a configured node id. A namespace URI (nsu=) is kept as text and resolved against
// the server's NamespaceArray on every new session, so a server that re-indexes its namespaces
// does not break the config.
type nodeRef struct {
	NSU string     // namespace URI, "" when the id names an index
	ID  *ua.NodeID // namespace index is a placeholder when NSU is set
}

var errNamespaceUnknown = errors.New("namespace URI not in the server's NamespaceArray")

// parseNodeRef parses ns=<n>;X=<id> or nsu=<uri>;X=<id> with X one of i, s, g, b.
func parseNodeRef(s string) (nodeRef, error) {
	if uri, rest, ok := strings.Cut(s, ";"); ok && strings.HasPrefix(uri, "nsu=") {
		u := strings.TrimPrefix(uri, "nsu=")
		if u == "" {
			return nodeRef{}, fmt.Errorf("node id %q: empty namespace URI", s)
		}
		if err := checkIDPart(rest); err != nil {
			return nodeRef{}, fmt.Errorf("node id %q: %w", s, err)
		}
		id, err := ua.ParseNodeID("ns=1;" + rest)
		if err != nil {
			return nodeRef{}, fmt.Errorf("node id %q: %v", s, err)
		}
		return nodeRef{NSU: u, ID: id}, nil
	}
	_, rest, _ := strings.Cut(s, ";")
	if rest == "" {
		rest = s
	}
	if err := checkIDPart(rest); err != nil {
		return nodeRef{}, fmt.Errorf("node id %q: %w", s, err)
	}
	id, err := ua.ParseNodeID(s)
	if err != nil {
		return nodeRef{}, fmt.Errorf("node id %q: %v (want ns=2;s=Name or nsu=urn:x;i=42)", s, err)
	}
	return nodeRef{ID: id}, nil
}

func checkIDPart(rest string) error {
	for _, p := range []string{"i=", "s=", "g=", "b="} {
		if strings.HasPrefix(rest, p) && len(rest) > 2 {
			return nil
		}
	}
	return errors.New("identifier must be i=, s=, g= or b= followed by a value")
}

// key is the node id in one canonical spelling (i=85 and ns=0;i=85 agree), for finding duplicates.
// Ids in different forms (ns= and nsu=) can only be compared once connected, so they never match.
func (r nodeRef) key() string {
	if r.NSU != "" {
		return "nsu=" + r.NSU + ";" + r.ID.String()
	}
	return r.ID.String()
}

// resolve returns the node id for one session's namespace table.
func (r nodeRef) resolve(namespaces []string) (*ua.NodeID, error) {
	if r.NSU == "" {
		return r.ID, nil
	}
	for i, u := range namespaces {
		if u == r.NSU {
			switch r.ID.Type() {
			case ua.NodeIDTypeTwoByte, ua.NodeIDTypeFourByte, ua.NodeIDTypeNumeric:
				return ua.NewNumericNodeID(uint16(i), r.ID.IntID()), nil
			}
			id := *r.ID
			if err := id.SetNamespace(uint16(i)); err != nil {
				return nil, err
			}
			return &id, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", errNamespaceUnknown, r.NSU)
}

// expandedString renders an id with its namespace URI (for browse output), falling back to ns=.
func expandedString(id *ua.NodeID, namespaces []string) string {
	s := id.String()
	ns := int(id.Namespace())
	if ns == 0 || ns >= len(namespaces) {
		return s
	}
	_, rest, ok := strings.Cut(s, ";")
	if !ok {
		return s
	}
	return "nsu=" + namespaces[ns] + ";" + rest
}
