package auth

import (
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MintOptions describes a development token minted by MintHMAC.
type MintOptions struct {
	// Secret signs the token with HS256; at least 32 bytes.
	Secret []byte
	// Tilesets granted; ["*"] grants all.
	Tilesets []string
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
	if len(o.Secret) < 32 {
		return "", fmt.Errorf("mint: secret must be at least 32 bytes")
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
		"iat":         o.Now.Unix(),
		"exp":         o.Now.Add(o.TTL).Unix(),
		o.GrantsClaim: o.Tilesets,
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
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(o.Secret)
}
