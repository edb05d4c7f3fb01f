package testenv

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// IDP is internal/testidp, a real OpenID Provider (zitadel/oidc's op
// package), running as a process of its own.
type IDP struct {
	// Issuer is its issuer URL, with the trailing slash it puts in iss.
	Issuer string
	// TokenEndpoint and AuthorizationEndpoint come from its discovery
	// document.
	TokenEndpoint         string
	AuthorizationEndpoint string
}

var idpBuild struct {
	once sync.Once
	path string
	err  error
}

// StartIDP builds internal/testidp (once per test binary) and starts it
// on loopback with the given redirect URIs for its maps-web client. It is
// stopped when the test ends.
func StartIDP(t testing.TB, redirects ...string) *IDP {
	t.Helper()
	idpBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "testidp")
		if err != nil {
			idpBuild.err = err
			return
		}
		idpBuild.path = filepath.Join(dir, "testidp")
		out, err := exec.Command("go", "build", "-o", idpBuild.path, "github.com/tileproxy/tileproxy/tools/testidp").CombinedOutput()
		if err != nil {
			idpBuild.err = fmt.Errorf("go build internal/testidp: %v\n%s", err, out)
		}
	})
	if idpBuild.err != nil {
		t.Fatal(idpBuild.err)
	}
	args := []string{"-listen", "127.0.0.1:0"}
	for _, r := range redirects {
		args = append(args, "-redirect", r)
	}
	cmd := exec.Command(idpBuild.path, args...)
	logs := &SyncBuffer{}
	cmd.Stderr = logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	issuer := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "issuer "); ok {
				issuer <- rest
			}
		}
	}()
	idp := &IDP{}
	select {
	case idp.Issuer = <-issuer:
	case <-time.After(30 * time.Second):
		t.Fatalf("testidp did not start:\n%s", logs.String())
	}
	resp, err := http.Get(strings.TrimSuffix(idp.Issuer, "/") + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Token     string `json:"token_endpoint"`
		Authorize string `json:"authorization_endpoint"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatalf("testidp discovery: %v", err)
	}
	idp.TokenEndpoint, idp.AuthorizationEndpoint = doc.Token, doc.Authorize
	return idp
}

// ClientCredentials gets an access token for one of the provider's
// service clients through the client-credentials grant.
func (p *IDP) ClientCredentials(t testing.TB, client, scope string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}
	req, _ := http.NewRequest("POST", p.TokenEndpoint, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client, "service-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &tok) != nil || tok.AccessToken == "" {
		t.Fatalf("client credentials for %s: %d %s", client, resp.StatusCode, body)
	}
	return tok.AccessToken
}

// Rotate makes a new signing key current; drop withdraws the old ones.
func (p *IDP) Rotate(t testing.TB, drop bool) {
	t.Helper()
	u := strings.TrimSuffix(p.Issuer, "/") + "/test/rotate"
	if drop {
		u += "?drop=1"
	}
	resp, err := http.Post(u, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("rotate: %d", resp.StatusCode)
	}
}
