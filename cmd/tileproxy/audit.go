package main

import (
	"log/slog"
	"time"

	"github.com/tileproxy/tileproxy/audit"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/metrics"
)

// openAudit opens the audit trail of cfg; nil when audit.path is unset.
// What a crash left is recovered first.
func openAudit(cfg *config.Config, m *metrics.Metrics, log *slog.Logger) (*audit.Writer, error) {
	if cfg.Audit.Path == "" {
		return nil, nil
	}
	w, err := audit.Open(audit.Config{Path: cfg.AuditPath(), MaxBytes: int64(cfg.Audit.MaxBytes), Keep: cfg.Audit.Keep,
		Replica: cfg.AuditReplica(), Clear: cfg.Audit.Subjects == config.SubjectsClear},
		audit.Deps{Now: time.Now, Log: log, Metrics: m})
	if err != nil {
		return nil, err
	}
	log.Info("audit trail", "path", cfg.AuditPath(), "replica", cfg.AuditReplica(), "subjects", cfg.Audit.Subjects)
	return w, nil
}
