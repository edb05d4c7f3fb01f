package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MintOptions describes a development token minted by Mint.
type MintOptions struct {
	// Secret signs the token with HS256 (at least 32 bytes), unless Key
	// is set.
	Secret []byte
	// Key, when set, signs the token instead: RS256 for an RSA key,
	// ES256 for a P-256 key, EdDSA for Ed25519. It stands in for an
	// identity provider's key in development (see ParsePrivateKeyPEM).
	Key crypto.Signer
	// KID is the kid header, when set.
	KID string
	// Tilesets granted in GrantsClaim; ["*"] grants all. Empty leaves
	// that claim out (grants then come from Claims and the issuer's rules).
	Tilesets []string
	// Claims are set as they are, after everything else: scope, roles,
	// groups, azp, client_id, a nested realm_access, ...
	Claims map[string]any
	// TTL is the lifetime from Now.
	TTL time.Duration
	// Subject, Issuer and Audience are set when non-empty.
	Subject, Issuer, Audience string
	// GrantsClaim names the grants claim; "tilesets" when empty.
	GrantsClaim string
	// Now is the issue time; time.Now() when zero.
	Now time.Time
}

// MintHMAC signs an HS256 token for development, demos and tests.
// Production tokens come from the identity provider, not from here.
func MintHMAC(o MintOptions) (string, error) {
	o.Key = nil
	return Mint(o)
}

// Mint signs a development token with o.Key, or with o.Secret (HS256).
func Mint(o MintOptions) (string, error) {
	var method jwt.SigningMethod
	var key any
	switch k := o.Key.(type) {
	case nil:
		if len(o.Secret) < 32 {
			return "", fmt.Errorf("mint: secret must be at least 32 bytes")
		}
		method, key = jwt.SigningMethodHS256, o.Secret
	case *rsa.PrivateKey:
		method, key = jwt.SigningMethodRS256, k
	case *ecdsa.PrivateKey:
		if k.Curve.Params().BitSize != 256 {
			return "", errors.New("mint: ECDSA keys must be P-256 (ES256)")
		}
		method, key = jwt.SigningMethodES256, k
	case ed25519.PrivateKey:
		method, key = jwt.SigningMethodEdDSA, k
	default:
		return "", fmt.Errorf("mint: unsupported key type %T", o.Key)
	}
	if o.TTL <= 0 {
		return "", fmt.Errorf("mint: ttl must be positive")
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.GrantsClaim == "" {
		o.GrantsClaim = "tilesets"
	}
	claims := jwt.MapClaims{
		"iat": o.Now.Unix(),
		"exp": o.Now.Add(o.TTL).Unix(),
	}
	if len(o.Tilesets) > 0 {
		claims[o.GrantsClaim] = o.Tilesets
	}
	if o.Subject != "" {
		claims["sub"] = o.Subject
	}
	if o.Issuer != "" {
		claims["iss"] = o.Issuer
	}
	if o.Audience != "" {
		claims["aud"] = o.Audience
	}
	for k, v := range o.Claims {
		claims[k] = v
	}
	t := jwt.NewWithClaims(method, claims)
	if o.KID != "" {
		t.Header["kid"] = o.KID
	}
	return t.SignedString(key)
}

// ParsePrivateKeyPEM reads one private key (PKCS#8 "PRIVATE KEY", PKCS#1
// "RSA PRIVATE KEY" or SEC 1 "EC PRIVATE KEY"), for minting development
// tokens as an identity provider would.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var k any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", k)
	}
	return s, nil
}
