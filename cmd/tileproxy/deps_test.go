package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDoesNotLinkTheGoPmtilesCLI: the server decodes PMTiles with a copy
// of go-pmtiles' format code (internal/archive/pmtiles.go), because the
// pmtiles package brings its CLI's cloud SDKs, sqlite and a global
// Prometheus registration with it. Only tests and tools may import it.
func TestDoesNotLinkTheGoPmtilesCLI(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/protomaps/go-pmtiles") || strings.HasPrefix(p, "cloud.google.com/") || strings.Contains(p, "sqlite") {
			t.Errorf("tileproxy links %s", p)
		}
	}
}
