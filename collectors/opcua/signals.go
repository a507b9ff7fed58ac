package opcua

// Signals lists the signal names of the configured nodes (collectors.SignalLister), so that
// `validate` can check feature rules against them. Elements of array values (signal[i]) are not
// listed: whether a node holds an array is known only from the server.
func (c *Config) Signals() []string {
	out := make([]string, 0, len(c.Nodes))
	for _, n := range c.Nodes {
		out = append(out, n.Signal)
	}
	for _, g := range c.Groups {
		for _, n := range g.Nodes {
			out = append(out, n.Signal)
		}
	}
	return out
}
