// Command testidp is a real OpenID Provider for tileproxy's tests: the
// op package of github.com/zitadel/oidc (an OpenID-certified provider
// library) with its example server's login pages and in-memory storage,
// run as a process of its own on loopback. It adds what the tests need and
// the example lacks: JWT access tokens whose claims carry tileset grants,
// a client-credentials client, and signing-key rotation on request.
//
//	testidp -listen 127.0.0.1:0 -redirect http://127.0.0.1:8000/page.html
//
// It prints "issuer URL" on stdout once it listens. POST /test/rotate
// makes a new signing key current (the old one stays published, so tokens
// already issued still verify); POST /test/rotate?drop=1 also withdraws
// every older key.
//
// Clients (secret "service-secret" for the three service clients, which
// use client credentials): "maps-service" (aud "tileproxy"),
// "maps-short" (aud "tileproxy", tokens that live 2 s), "other-service"
// (aud "other-api"); "maps-web" (public, authorization code with PKCE, aud
// "maps-web"). Every access token is a JWT. User "test-user2",
// password "verysecure", holds the realm role "analysts". Access tokens
// carry the requested tiles:{tileset} scopes in "scope" and the user's
// roles in "realm_access.roles", as Keycloak's do.
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	var redirects stringList
	flag.Var(&redirects, "redirect", "redirect URI of the maps-web client (repeatable)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(*listen, redirects, log); err != nil {
		log.Error("testidp", "err", err)
		os.Exit(1)
	}
}

func run(listen string, redirects []string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	issuer := fmt.Sprintf("http://%s/", ln.Addr())
	storage.RegisterClients(storage.NativeClient("maps-web", redirects...))
	s, err := newStore(issuer)
	if err != nil {
		return err
	}
	router := exampleop.SetupServer(issuer, s, log, false, op.WithAllowInsecure())
	mux := http.NewServeMux()
	mux.HandleFunc("POST /test/rotate", func(w http.ResponseWriter, r *http.Request) {
		if err := s.rotate(r.URL.Query().Get("drop") == "1"); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write([]byte("rotated\n"))
	})
	mux.Handle("/", router)
	fmt.Printf("issuer %s\n", issuer)
	return http.Serve(ln, mux)
}

// store is the example's in-memory storage with rotating keys, JWT access
// tokens and tileset claims.
type store struct {
	*storage.Storage

	mu   sync.Mutex
	keys []*key // keys[0] signs; all are published
}

func newStore(issuer string) (*store, error) {
	s := &store{Storage: storage.NewStorage(storage.NewUserStore(issuer))}
	return s, s.rotate(false)
}

// rotate makes a fresh RSA key current; drop withdraws the older ones.
func (s *store) rotate(drop bool) error {
	pk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := &key{id: fmt.Sprintf("k%d", len(s.keys)+1), priv: pk}
	if drop {
		s.keys = nil
	}
	s.keys = append([]*key{k}, s.keys...)
	return nil
}

func (s *store) SigningKey(context.Context) (op.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[0], nil
}

func (s *store) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *store) KeySet(context.Context) ([]op.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]op.Key, len(s.keys))
	for i, k := range s.keys {
		out[i] = publicKey{k}
	}
	return out, nil
}

// GetClientByClientID hands out the example's clients with JWT access
// tokens and the tiles: scopes allowed.
func (s *store) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return jwtClient{c}, nil
}

const serviceSecret = "service-secret"

// services are the client-credentials clients and the audience of their
// tokens.
var services = map[string]string{"maps-service": "tileproxy", "maps-short": "tileproxy", "other-service": "other-api"}

// shortLived is the client whose tokens expire at once, for expiry tests.
const shortLived = "maps-short"

func (s *store) ClientCredentials(_ context.Context, id, secret string) (op.Client, error) {
	if _, ok := services[id]; !ok || secret != serviceSecret {
		return nil, errors.New("wrong client or secret")
	}
	return serviceClient{jwtClient{storage.WebClient(id, serviceSecret)}}, nil
}

func (s *store) ClientCredentialsTokenRequest(_ context.Context, id string, scopes []string) (op.TokenRequest, error) {
	aud, ok := services[id]
	if !ok {
		return nil, errors.New("wrong client")
	}
	return &oidc.JWTTokenRequest{Subject: id, Audience: []string{aud}, Scopes: scopes}, nil
}

// CreateAccessToken gives maps-short's tokens two seconds.
func (s *store) CreateAccessToken(ctx context.Context, req op.TokenRequest) (string, time.Time, error) {
	id, exp, err := s.Storage.CreateAccessToken(ctx, req)
	if err == nil && req.GetSubject() == shortLived {
		exp = time.Now().Add(2 * time.Second)
	}
	return id, exp, err
}

// roles are the realm roles of the example's users.
var roles = map[string][]string{"id2": {"analysts"}}

// GetPrivateClaimsFromScopes puts the tiles: scopes and the user's roles
// into the access token.
func (s *store) GetPrivateClaimsFromScopes(_ context.Context, userID, _ string, scopes []string) (map[string]any, error) {
	claims := map[string]any{}
	var tiles []string
	for _, sc := range scopes {
		if strings.HasPrefix(sc, "tiles:") {
			tiles = append(tiles, sc)
		}
	}
	if len(tiles) > 0 {
		claims["scope"] = strings.Join(tiles, " ")
	}
	if r := roles[userID]; len(r) > 0 {
		claims["realm_access"] = map[string]any{"roles": slices.Clone(r)}
	}
	return claims, nil
}

// jwtClient is a client whose access tokens are JWTs and that may ask
// for tiles: scopes.
type jwtClient struct{ op.Client }

func (jwtClient) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }

func (c jwtClient) IsScopeAllowed(scope string) bool {
	return strings.HasPrefix(scope, "tiles:") || c.Client.IsScopeAllowed(scope)
}

func (jwtClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// serviceClient may use the client-credentials grant.
type serviceClient struct{ jwtClient }

func (serviceClient) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeClientCredentials}
}

// key is one signing key.
type key struct {
	id   string
	priv *rsa.PrivateKey
}

func (k *key) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *key) Key() any                                    { return k.priv }
func (k *key) ID() string                                  { return k.id }

// publicKey is a key as the JWKS publishes it.
type publicKey struct{ k *key }

func (p publicKey) ID() string                         { return p.k.id }
func (p publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (p publicKey) Use() string                        { return "sig" }
func (p publicKey) Key() any                           { return &p.k.priv.PublicKey }

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
