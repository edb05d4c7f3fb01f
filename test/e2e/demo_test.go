package e2e

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDemoShowsTheWorld runs `tileproxy demo` as a newcomer does and
// opens the link it prints in Chromium: the viewer's first map is the
// world's countries, vector tiles from the demo's PMTiles archive drawn
// with MapLibre GL.
func TestDemoShowsTheWorld(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "tileproxy")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/tileproxy").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "demo", "-listen", "127.0.0.1:0", "-metrics-listen", "")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	link := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); strings.Contains(l, "#access_token=") {
				link <- l
			}
		}
	}()
	var url string
	select {
	case url = <-link:
	case <-time.After(60 * time.Second):
		t.Fatal("the demo printed no link")
	}
	ctx, _ := browser(t)
	// The viewer says so once MapLibre is idle; the countries must also be
	// on the canvas (the world at zoom 1 shows well over a hundred).
	drawn := chromedp.Poll[chromedp.Void](`document.getElementById("status").textContent.includes("drawn with MapLibre") &&
		map.areTilesLoaded() && map.queryRenderedFeatures().length > 100`,
		chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := drawn(ctx, t)
		return err
	})); err != nil {
		s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("status").textContent`))
		t.Fatalf("the world map: %v (viewer says %q)", err, s)
	}
	// The viewer fills the window, so the screenshot is of the viewport as
	// it is: an element screenshot captures beyond the viewport, which
	// resizes the window and makes MapLibre clear its canvas.
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	checkShot(t, shot, outDir(), "demo-world", 4)
}
