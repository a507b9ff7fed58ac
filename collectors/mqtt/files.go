package mqtt

import "github.com/gemba-io/gemba/collectors"

// Files lists the TLS files the collector opens when it connects (collectors.FileLister), so
// that `gemba-agent validate` reports a missing one instead of the first connect failing.
func (c *Config) Files() []collectors.File {
	return []collectors.File{
		{Field: "tls.ca_file", Path: c.TLS.CAFile},
		{Field: "tls.cert_file", Path: c.TLS.CertFile},
		{Field: "tls.key_file", Path: c.TLS.KeyFile},
	}
}
