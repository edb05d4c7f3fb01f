package e2e

import (
	"bufio"
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// demoRun is one `tileproxy demo` process: the links it printed, in
// order, its stderr (the access lines) and, with -tls, its certificate's
// key hash for Chromium.
type demoRun struct {
	links  []string
	stderr io.Reader
	spki   string
}

// buildDemo builds the binary a newcomer runs.
func buildDemo(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tileproxy")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/tileproxy").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// startDemo runs bin's demo over tr and waits for what it prints.
func startDemo(t *testing.T, bin string, tr transport) *demoRun {
	t.Helper()
	args := []string{"demo", "-listen", "127.0.0.1:0", "-metrics-listen", ""}
	if tr.https {
		args = append(args, "-tls")
	}
	cmd := exec.Command(bin, args...)
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	printed := make(chan *demoRun, 1)
	go func() {
		d := &demoRun{stderr: stderr}
		sc := bufio.NewScanner(stdout)
		var cert string
		for sc.Scan() {
			switch l := strings.TrimSpace(sc.Text()); {
			case strings.Contains(l, "#access_token="):
				d.links = append(d.links, l)
			case strings.HasSuffix(l, ".crt"):
				cert = l
			case strings.HasPrefix(l, "Ctrl-C stops it"):
				if cert != "" {
					d.spki = spkiOf(t, cert)
				}
				printed <- d
			}
		}
	}()
	select {
	case d := <-printed:
		if len(d.links) < 2 || tr.https != (d.spki != "") || !strings.HasPrefix(d.links[0], map[bool]string{false: "http://", true: "https://"}[tr.https]) {
			t.Fatalf("the demo printed %v (certificate hash %q) over %s", d.links, d.spki, tr.name)
		}
		return d
	case <-time.After(60 * time.Second):
		t.Fatal("the demo printed no links")
	}
	return nil
}

// TestDemoShowsTheWorld runs `tileproxy demo` as a newcomer does and
// opens the link it prints in Chromium: the viewer's first map is the
// world's countries, vector tiles from the demo's PMTiles archive drawn
// with MapLibre GL. With -tls, over https and HTTP/2.
func TestDemoShowsTheWorld(t *testing.T) {
	bin := buildDemo(t)
	eachTransport(t, func(t *testing.T, tr transport) {
		d := startDemo(t, bin, tr)
		go io.Copy(io.Discard, d.stderr)
		ctx, _ := browser(t, d.spki)
		// The viewer says so once MapLibre is idle; the countries must
		// also be on the canvas (the world at zoom 1 shows well over a
		// hundred).
		drawn := chromedp.Poll[chromedp.Void](`document.getElementById("status").textContent.includes("drawn with MapLibre") &&
		map.areTilesLoaded() && map.queryRenderedFeatures().length > 100`,
			chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))
		if err := chromedp.Do(ctx, chromedp.Navigate(d.links[0]), chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := drawn(ctx, t)
			return err
		})); err != nil {
			s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("status").textContent`))
			t.Fatalf("the world map: %v (viewer says %q)", err, s)
		}
		// The viewer fills the window, so the screenshot is of the
		// viewport as it is: an element screenshot captures beyond the
		// viewport, which resizes the window and makes MapLibre clear its
		// canvas.
		shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		checkShot(t, shot, outDir(), "demo-world-"+tr.name, 4)
	})
}
