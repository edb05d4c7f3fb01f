package config

// TLS is a listener's certificate and key (PEM files), reloaded when they
// change and on SIGHUP; off without cert_file.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// MinVersion is "1.2" (the default) or "1.3".
	MinVersion string `yaml:"min_version"`
}

// On reports whether the listener speaks TLS.
func (t *TLS) On() bool { return t.CertFile != "" }

// HTTP2 bounds what one HTTP/2 connection may hold.
type HTTP2 struct {
	// MaxConcurrentStreams bounds a connection's open streams (250).
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"`
}

// TLSPath resolves a TLS file against Dir.
func (c *Config) TLSPath(p string) string { return c.rel(p) }

func validateTLS(field string, t *TLS, bad func(field, format string, args ...any)) {
	if *t == (TLS{}) {
		return
	}
	if t.CertFile == "" || t.KeyFile == "" {
		bad(field, "needs both cert_file and key_file")
	}
	switch t.MinVersion {
	case "", "1.2", "1.3":
	default:
		bad(field+".min_version", "%q must be 1.2 or 1.3", t.MinVersion)
	}
}

func (c *Config) validateHTTP(bad func(field, format string, args ...any)) {
	validateTLS("tls", &c.TLS, bad)
	validateTLS("metrics_tls", &c.MetricsTLS, bad)
	if n := c.HTTP2.MaxConcurrentStreams; n < 1 || n > 10_000 {
		bad("http2.max_concurrent_streams", "%d must be between 1 and 10000", n)
	}
	if c.H2C && c.TLS.On() {
		bad("h2c", "is cleartext HTTP/2: with tls, HTTP/2 is negotiated already (leave h2c off)")
	}
}
