package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/tileproxy/tileproxy/audit"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/metrics"
	"github.com/tileproxy/tileproxy/origin"
)

// openAudit opens the audit trail of cfg (nil when audit.path is unset),
// and with audit.ship its shipper, which runs until stop is called.
// What a crash left is recovered first, and queued to ship.
func openAudit(ctx context.Context, cfg *config.Config, originDeps origin.Deps, m *metrics.Metrics, log *slog.Logger) (w *audit.Writer, stop func(), err error) {
	if cfg.Audit.Path == "" {
		return nil, func() {}, nil
	}
	deps := audit.Deps{Now: time.Now, Log: log, Metrics: m}
	stop = func() {}
	if ship := cfg.Audit.Ship; ship.Bucket != "" {
		// The proxy's own credentials (not a tileset's session).
		up, err := origin.New(ctx, cfg, originDeps)
		if err != nil {
			return nil, nil, err
		}
		s := audit.NewShipper(ship.Bucket, ship.Prefix, up, log, m)
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		go s.Run(sctx)
		deps.Rotated, stop = s.Enqueue, cancel
	}
	w, err = audit.Open(audit.Config{Path: cfg.AuditPath(), MaxBytes: int64(cfg.Audit.MaxBytes), Keep: cfg.Audit.Keep,
		Replica: cfg.AuditReplica(), Clear: cfg.Audit.Subjects == config.SubjectsClear}, deps)
	if err != nil {
		stop()
		return nil, nil, err
	}
	log.Info("audit trail", "path", cfg.AuditPath(), "replica", cfg.AuditReplica(), "subjects", cfg.Audit.Subjects, "ship", cfg.Audit.Ship.Bucket != "")
	return w, stop, nil
}

// auditCmd answers "who saw this tile" and "what did this principal see"
// from local or downloaded trail files (plain or gzip'd), streaming.
func auditCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".", "directory of audit files (*.jsonl, *.jsonl.gz), read in name order")
	principal := fs.String("principal", "", "what this principal saw (its principal hash, or its subject with subjects: clear)")
	tile := fs.String("tile", "", "who saw this tile: TILESET/Z/X/Y")
	tileset := fs.String("tileset", "", "who saw this tileset, principal by principal")
	since := fs.String("since", "", "from this time (RFC 3339, or YYYY-MM-DD)")
	until := fs.String("until", "", "until this time, exclusive (RFC 3339, or YYYY-MM-DD)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	q := audit.Query{Principal: *principal, Tileset: *tileset}
	if *tile != "" {
		ts, zxy, ok := strings.Cut(*tile, "/")
		if !ok || strings.Count(zxy, "/") != 2 {
			return errors.New("audit: -tile is TILESET/Z/X/Y")
		}
		q.Tileset, q.Tile = ts, zxy
	}
	if n := btoi(q.Principal != "") + btoi(*tile != "") + btoi(*tile == "" && *tileset != ""); n != 1 {
		return errors.New("audit: give one of -principal, -tile, -tileset")
	}
	var err error
	if q.Since, err = parseWhen(*since); err != nil {
		return fmt.Errorf("audit: -since: %w", err)
	}
	if q.Until, err = parseWhen(*until); err != nil {
		return fmt.Errorf("audit: -until: %w", err)
	}
	var files []string
	for _, pat := range []string{"*.jsonl", "*.jsonl.gz", "*.json.gz"} {
		m, _ := filepath.Glob(filepath.Join(*dir, pat))
		files = append(files, m...)
	}
	slices.Sort(files)
	if len(files) == 0 {
		return fmt.Errorf("audit: no audit files (*.jsonl, *.jsonl.gz) in %s", *dir)
	}
	r := audit.NewReport(q)
	for _, f := range files {
		if err := scanFile(r, f); err != nil {
			return fmt.Errorf("audit: %s: %w", f, err)
		}
	}
	r.Write(stdout)
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// scanFile feeds one file to r, gunzipping a .gz.
func scanFile(r *audit.Report, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var in io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return err
		}
		defer zr.Close()
		in = zr
	}
	return r.Scan(in)
}

// parseWhen reads an RFC 3339 time or a date; "" is no bound.
func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 nor YYYY-MM-DD", s)
	}
	return t, nil
}
