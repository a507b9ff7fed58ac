package opcua

import "github.com/gemba-io/gemba/collectors"

// Files lists the certificate and key files the collector opens when it connects
// (collectors.FileLister), so that `gemba-agent validate` reports a missing one instead of the
// first connect failing. trust.dir is not listed: it may be filled after a refused connection.
func (c *Config) Files() []collectors.File {
	return []collectors.File{
		{Field: "certificate.cert_file", Path: c.Certificate.CertFile},
		{Field: "certificate.key_file", Path: c.Certificate.KeyFile},
		{Field: "auth.cert_file", Path: c.Auth.CertFile},
		{Field: "auth.key_file", Path: c.Auth.KeyFile},
	}
}
