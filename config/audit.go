package config

import (
	"os"
	"regexp"
)

// The values of audit.subjects.
const (
	SubjectsHash  = "hash"
	SubjectsClear = "clear"
)

// Audit configures the audit trail (docs/audit.md): one JSON line per
// tile answer and per denial, in a file that survives kill -9.
type Audit struct {
	// Path is the trail's file; "" turns the audit off.
	Path string `yaml:"path"`
	// MaxBytes rotates the file when the next line would pass it.
	MaxBytes ByteSize `yaml:"max_bytes"`
	// Keep is how many rotated files stay on disk (unshipped ones are
	// never removed).
	Keep int `yaml:"keep"`
	// Subjects is hash (the default) or clear.
	Subjects string `yaml:"subjects"`
	// Replica names this process in every line and shipped key; the host
	// name when empty.
	Replica string `yaml:"replica"`
	// Ship uploads each rotated file to S3.
	Ship AuditShip `yaml:"ship"`
}

// AuditShip names where rotated audit files go.
type AuditShip struct {
	Bucket string `yaml:"bucket"`
	Prefix string `yaml:"prefix"`
}

// AuditPath is audit.path, relative to Dir.
func (c *Config) AuditPath() string { return c.rel(c.Audit.Path) }

// AuditReplica is audit.replica, or the host name.
func (c *Config) AuditReplica() string {
	if c.Audit.Replica != "" {
		return c.Audit.Replica
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "tileproxy"
	}
	return h
}

var replicaName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func (c *Config) validateAudit(bad func(field, format string, args ...any)) {
	a := &c.Audit
	if a.Path == "" {
		return
	}
	if a.MaxBytes < 1<<20 || a.MaxBytes > 64<<30 {
		bad("audit.max_bytes", "%d must be between 1MiB and 64GiB", a.MaxBytes)
	}
	if a.Keep < 1 || a.Keep > 100_000 {
		bad("audit.keep", "%d must be between 1 and 100000", a.Keep)
	}
	switch a.Subjects {
	case SubjectsHash, SubjectsClear:
	default:
		bad("audit.subjects", "%q must be hash or clear", a.Subjects)
	}
	if a.Replica != "" && !replicaName.MatchString(a.Replica) {
		bad("audit.replica", "%q must be 1-64 of A-Z a-z 0-9 . _ -", a.Replica)
	}
	if a.Ship.Prefix != "" && a.Ship.Bucket == "" {
		bad("audit.ship.bucket", "is required with audit.ship.prefix")
	}
}
