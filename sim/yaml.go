package sim

import (
	"fmt"
	"strings"
)

// CollectorsYAML returns an agent `collectors:` section that reads every signal of the plant: one
// OPC UA collector with a node per signal, and one MQTT collector for the JSON telemetry and the
// Sparkplug B edge node. Signal names are <line>.<machine>.<field> on every protocol. Without an
// OPC UA endpoint (the simulator runs no server: its OPC UA machines are silent) there is no OPC UA
// collector.
func CollectorsYAML(p *Plant, opcuaEndpoint, broker string) string {
	var b strings.Builder
	b.WriteString("collectors:\n")
	var opcua, json, sp bool
	for _, m := range p.Machines {
		switch m.Protocol {
		case OPCUA:
			opcua = opcuaEndpoint != ""
		case MQTTJSON:
			json = true
		case Sparkplug:
			sp = true
		}
	}
	if opcua {
		// The simulator changes values every step, so 5 s of silence means a dead session; gopcua's
		// server keeps old connections open after Close, so only the watchdog notices its restart.
		fmt.Fprintf(&b, "  - name: sim-opcua\n    type: opcua\n    endpoint: %s\n    security: {policy: None, mode: None}\n    publishing_interval: 100ms\n    reconnect: {min_backoff: 200ms, max_backoff: 2s, watchdog: 5s}\n    nodes:\n", opcuaEndpoint)
		for _, m := range p.Machines {
			if m.Protocol != OPCUA {
				continue
			}
			for i := range m.Points {
				s := m.Signal(m.Points[i].Field)
				fmt.Fprintf(&b, "      - {node: \"nsu=%s;s=%s\", signal: %s}\n", NamespaceURI, s, s)
			}
		}
	}
	if json || sp {
		fmt.Fprintf(&b, "  - name: sim-mqtt\n    type: mqtt\n    broker: %s\n    qos: 1\n    reconnect: {initial: 200ms, max: 2s}\n    subscriptions:\n", broker)
		if json {
			fmt.Fprintf(&b, "      - {topic: \"%s/+/+/telemetry\", format: json, signal: \"{topic.1}.{topic.2}.{field}\", time_field: ts, time_format: unix_ms}\n", p.Config.Site)
		}
		if sp {
			fmt.Fprintf(&b, "      - {topic: \"spBv1.0/%s/#\", format: sparkplugb, signal: \"{device}.{metric}\"}\n", p.Config.Site)
		}
	}
	return b.String()
}
