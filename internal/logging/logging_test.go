package logging

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/accesslog"
)

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cfg        config.Log
		wantAccess bool
		wantInfo   bool
		wantPrefix string
	}{
		{"text info", config.Log{Format: "text", Level: "info", Access: true}, true, true, "time="},
		{"json", config.Log{Format: "json", Level: "debug", Access: true}, true, true, "{"},
		{"access off", config.Log{Format: "text", Level: "info"}, false, true, "time="},
		{"warn hides access", config.Log{Format: "text", Level: "warn", Access: true}, false, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			l := New(tc.cfg, &out)
			if (l.Access != nil) != tc.wantAccess {
				t.Errorf("access logger: %v, want %v", l.Access != nil, tc.wantAccess)
			}
			l.Log.Info("hello")
			l.Log.Warn("careful")
			if l.Access != nil {
				l.Access.Log(&accesslog.Line{Time: time.Now(), Method: "GET", Path: "/x", Status: 200})
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			s := out.String()
			if strings.Contains(s, "hello") != tc.wantInfo || !strings.Contains(s, "careful") {
				t.Errorf("output:\n%s", s)
			}
			if tc.wantPrefix != "" && !strings.HasPrefix(s, tc.wantPrefix) {
				t.Errorf("format: %q", s)
			}
		})
	}
}
