package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/exfil"
	"github.com/tileproxy/tileproxy/internal/store"
	"github.com/tileproxy/tileproxy/metrics"
	"github.com/tileproxy/tileproxy/revoke"
)

// newStore opens limits.store.
func newStore(cfg *config.Config) (store.Store, error) {
	if cfg.Limits.RedisStore() {
		return store.NewRedis(cfg.Limits.Store)
	}
	return store.NewMemory(time.Now), nil
}

// controls are the exfiltration controls of a server: they outlive a
// configuration, as the counts and revocations they hold must.
type controls struct {
	store   store.Store
	limiter *exfil.Limiter
	revoked *revoke.List
	stop    context.CancelFunc
}

// newControls opens the store and starts settling and polling, until
// close: not at ctx's end, since a draining server still answers (and
// counts) requests after the signal.
func newControls(ctx context.Context, cfg *config.Config, m *metrics.Metrics, log *slog.Logger) (*controls, error) {
	st, err := newStore(cfg)
	if err != nil {
		return nil, err
	}
	rl, err := revoke.New(cfg.RevocationPath(), revoke.Deps{Store: st, Log: log})
	if err != nil {
		st.Close()
		return nil, err
	}
	c := &controls{store: st, revoked: rl, limiter: exfil.New(exfil.FromConfig(cfg), exfil.Deps{Store: st, Now: time.Now, Metrics: m, Log: log})}
	if cfg.Limits.RedisStore() {
		log.Info("limits shared through the store", "store", cfg.Limits.StoreName(), "on_store_error", cfg.Limits.OnStoreError)
	}
	ctx, c.stop = context.WithCancel(context.WithoutCancel(ctx))
	go c.limiter.Run(ctx)
	go rl.Run(ctx)
	return c, nil
}

// configure applies a reloaded configuration's numbers and revocation
// file; the store stays (limits.store needs a restart).
func (c *controls) configure(cfg *config.Config) error {
	if err := c.revoked.SetFile(cfg.RevocationPath()); err != nil {
		return err
	}
	c.limiter.Configure(exfil.FromConfig(cfg))
	return nil
}

// close settles what was counted and closes the store.
func (c *controls) close() {
	c.limiter.Close()
	c.stop()
	c.store.Close()
}

// revokeCmd writes a revocation to the shared store: every replica
// refuses the subject's (or the token's) tokens within a second.
func revokeCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "tileproxy.yaml", "config file (its limits.store is written)")
	sub := fs.String("sub", "", "revoke every token of this subject")
	iss := fs.String("iss", "", "the subject's issuer (an auth.issuers entry's issuer); empty for self-issued tokens")
	jti := fs.String("jti", "", "revoke the token with this ID")
	ttl := fs.Duration("ttl", 0, "how long the revocation lasts (default: auth.max_token_lifetime, else 24h)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*sub == "") == (*jti == "") {
		return errors.New("revoke: give -sub (with -iss for an issuer's token) or -jti")
	}
	if *jti != "" && *iss != "" {
		return errors.New("revoke: -iss goes with -sub")
	}
	cfg, err := loadValid(*path)
	if err != nil {
		return err
	}
	if !cfg.Limits.RedisStore() {
		return errors.New("revoke: limits.store is memory, which only the running process sees; set limits.store to a redis:// URL, or add the line to revocation.file and send SIGHUP")
	}
	entry := revoke.JTI(*jti)
	if *sub != "" {
		entry = revoke.Sub(*iss, *sub)
	}
	if err := revoke.Check(entry); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	d := *ttl
	if d == 0 {
		d = 24 * time.Hour
		if m := cfg.Auth.MaxTokenLifetime.Duration(); m > 0 {
			d = m + cfg.Auth.Leeway.Duration()
		}
	}
	if d < 0 {
		return errors.New("revoke: -ttl must be positive")
	}
	st, err := store.NewRedis(cfg.Limits.Store)
	if err != nil {
		return err
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	until := time.Now().Add(d)
	if err := st.Revoke(ctx, entry, until); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	fmt.Fprintf(stdout, "revoked %q until %s in %s\n", entry, until.UTC().Format(time.RFC3339), cfg.Limits.StoreName())
	return nil
}
