package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/tileproxy/tileproxy/area"
	"github.com/tileproxy/tileproxy/internal/worldtiles"
)

// TestDemoScopedToACountry opens the demo's second link, whose token is
// scoped to one country (an area the demo builds from world-atlas at
// start), zoom 0-5: MapLibre draws only tiles that meet that country, the
// TileJSON's bounds frame it, and the console shows no error but the
// denied tiles'.
func TestDemoScopedToACountry(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "tileproxy")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/tileproxy").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "demo", "-listen", "127.0.0.1:0", "-metrics-listen", "")
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Every tile answer of the world tileset, from the access lines.
	var mu sync.Mutex
	answers := map[string]int{}
	line := regexp.MustCompile(`path=/tiles/world/(\d+)/(\d+)/(\d+)\.\w+ status=(\d+)`)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := line.FindStringSubmatch(sc.Text()); m != nil {
				code, _ := strconv.Atoi(m[4])
				mu.Lock()
				answers[m[1]+"/"+m[2]+"/"+m[3]] = code
				mu.Unlock()
			}
		}
	}()
	link := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		scoped := false
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if strings.HasPrefix(l, "A token scoped to") {
				scoped = true
			}
			if scoped && strings.Contains(l, "#access_token=") {
				link <- l
			}
		}
	}()
	var url string
	select {
	case url = <-link:
	case <-time.After(60 * time.Second):
		t.Fatal("the demo printed no scoped link")
	}
	token := url[strings.Index(url, "#access_token=")+len("#access_token="):]
	outline, err := worldtiles.Country("Germany")
	if err != nil {
		t.Fatal(err)
	}
	country, err := area.Parse("country", outline)
	if err != nil {
		t.Fatal(err)
	}

	ctx, _ := browser(t)
	var cmu sync.Mutex
	var consoleErrors []string
	chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			for _, a := range e.Args {
				msg += string(a.Value) + a.Description + " "
			}
		case *cdplog.EventEntryAdded:
			if e.Entry.Level != cdplog.EntryLevelError {
				return
			}
			msg = e.Entry.Text + " " + e.Entry.URL
		default:
			return
		}
		cmu.Lock()
		consoleErrors = append(consoleErrors, msg)
		cmu.Unlock()
	})
	idle := chromedp.Poll[chromedp.Void](`map && map.loaded() && map.areTilesLoaded() &&
		document.getElementById("status").textContent.includes("drawn with MapLibre")`,
		chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := idle(ctx, t)
		return err
	})); err != nil {
		t.Fatalf("the scoped map: %v", err)
	}
	// The country, framed by the TileJSON's bounds.
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	checkShot(t, shot, outDir(), "demo-scoped", 3)
	// Closer in, the tiles at the source's deepest zoom (5) around the
	// country's edges: some meet it, some (inside its box) do not.
	settled := chromedp.Poll[chromedp.Void](`map.loaded() && map.areTilesLoaded()`,
		chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))
	for _, js := range []string{`map.jumpTo({zoom: 6.5, center: [6.5, 54.5]}); true`, `map.jumpTo({zoom: 6.5, center: [14.5, 47.6]}); true`} {
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](js)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := settled(ctx, t)
			return err
		})); err != nil {
			t.Fatalf("after %s: %v", js, err)
		}
	}
	bounds, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](fmt.Sprintf(
		`fetch("/tiles/world.json", {headers: {Authorization: "Bearer %s"}}).then(r => r.json()).then(j => j.bounds)`, token),
		chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	b := country.Bound()
	if len(bounds) != 4 || bounds[0] < b.Min[0]-0.01 || bounds[1] < b.Min[1]-0.01 || bounds[2] > b.Max[0]+0.01 || bounds[3] > b.Max[1]+0.01 ||
		bounds[2]-bounds[0] < (b.Max[0]-b.Min[0])*0.99 {
		t.Errorf("TileJSON bounds %v do not frame the country %v", bounds, b)
	}
	time.Sleep(300 * time.Millisecond) // the access log flushes every 100 ms
	mu.Lock()
	served := 0
	for tile, code := range answers {
		var z, x, y int
		fmt.Sscanf(tile, "%d/%d/%d", &z, &x, &y)
		in := country.Intersects(uint8(z), uint32(x), uint32(y))
		switch {
		case code == 200 && !in:
			t.Errorf("tile %s was served, but does not meet the country", tile)
		case code == 200:
			served++
		case code != 403 && code != 304:
			t.Errorf("tile %s answered %d", tile, code)
		}
	}
	mu.Unlock()
	if served == 0 {
		t.Fatal("no tile of the country was drawn")
	}
	cmu.Lock()
	defer cmu.Unlock()
	for _, m := range consoleErrors {
		if !strings.Contains(m, "403") && !strings.Contains(m, "Forbidden") && !strings.Contains(m, "favicon.ico") {
			t.Errorf("console error beyond the denied tiles: %s", m)
		}
	}
	t.Logf("%d tiles served, %d answers, %d console errors (denied tiles, favicon)", served, len(answers), len(consoleErrors))
}
