package mqtt

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gemba-io/gemba/collectors/mqtt/sparkplug"
)

// Sparkplug births are saved in the data dir before the birth message is acknowledged: after an
// agent crash the broker redelivers NDATA that refers to aliases only, and without the saved
// birth those readings could not be named.

type spSaved struct {
	Filter string        `json:"filter"`
	Nodes  []spSavedNode `json:"nodes"`
}

type spSavedNode struct {
	Group   string          `json:"group"`
	Node    string          `json:"node"`
	BdSeq   int64           `json:"bd_seq"`
	Alive   bool            `json:"alive"`
	Metrics []spSavedMetric `json:"metrics"`
}

type spSavedMetric struct {
	Device   string  `json:"device,omitempty"`
	Name     string  `json:"name"`
	Alias    *uint64 `json:"alias,omitempty"`
	Datatype uint32  `json:"datatype"`
}

func spStatePath(dir, filter string) string {
	h := fnv.New64a()
	h.Write([]byte(filter))
	return filepath.Join(dir, fmt.Sprintf("sparkplug-%016x.json", h.Sum64()))
}

// snapshot renders the births of every node for the data dir. The worker calls it when a birth
// or death changed them; the committer writes it before acknowledging that message.
func (h *spHost) snapshot(filter string) ([]byte, error) {
	h.dirty = false
	out := spSaved{Filter: filter}
	for k, n := range h.nodes {
		sn := spSavedNode{Group: k.group, Node: k.node, BdSeq: n.bdSeq, Alive: n.alive}
		for _, ms := range n.devices {
			for _, md := range ms {
				sn.Metrics = append(sn.Metrics, spSavedMetric{Device: md.device, Name: md.name, Alias: md.alias, Datatype: uint32(md.datatype)})
			}
		}
		slices.SortFunc(sn.Metrics, func(a, b spSavedMetric) int {
			return strings.Compare(a.Device+"\x00"+a.Name, b.Device+"\x00"+b.Name)
		})
		out.Nodes = append(out.Nodes, sn)
	}
	slices.SortFunc(out.Nodes, func(a, b spSavedNode) int { return strings.Compare(a.Group+"/"+a.Node, b.Group+"/"+b.Node) })
	return json.Marshal(out)
}

// load restores saved births, naming signals with the current template (it may have changed).
func (s *sub) loadSparkplug(h *spHost, dir string) error {
	if dir == "" {
		return nil
	}
	data, err := os.ReadFile(spStatePath(dir, s.filter))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sparkplug state: %w", err)
	}
	if err := s.restoreSparkplug(h, data); err != nil {
		return fmt.Errorf("sparkplug state %s: %w", spStatePath(dir, s.filter), err)
	}
	return nil
}

// restoreSparkplug replaces h's nodes with a snapshot (nil: none).
func (s *sub) restoreSparkplug(h *spHost, data []byte) error {
	h.nodes, h.pending, h.dirty = map[spKey]*spNode{}, h.pending[:0], false
	if data == nil {
		return nil
	}
	var saved spSaved
	if err := json.Unmarshal(data, &saved); err != nil {
		return err
	}
	for _, sn := range saved.Nodes {
		n := &spNode{bdSeq: sn.BdSeq, seq: -1, alive: sn.Alive, aliases: map[uint64]*spMetric{},
			devices: map[string]map[string]*spMetric{"": {}}}
		for _, sm := range sn.Metrics {
			topic := spNamespace + "/" + sn.Group + "/NBIRTH/" + sn.Node
			if sm.Device != "" {
				topic = spNamespace + "/" + sn.Group + "/DBIRTH/" + sn.Node + "/" + sm.Device
			}
			c := tctx{topic: topic, group: sn.Group, node: sn.Node, device: sm.Device, field: metricField(sm.Name)}
			name, err := s.signal.expand(&c)
			if err != nil {
				continue
			}
			md := &spMetric{alias: sm.Alias, name: sm.Name, device: sm.Device, datatype: sparkplug.DataType(sm.Datatype), signal: name}
			if n.devices[sm.Device] == nil {
				n.devices[sm.Device] = map[string]*spMetric{}
			}
			n.devices[sm.Device][sm.Name] = md
			if sm.Alias != nil {
				n.declareAlias(md) // an ambiguous alias stays ambiguous across a restart
			}
		}
		h.nodes[spKey{sn.Group, sn.Node}] = n
	}
	return nil
}
