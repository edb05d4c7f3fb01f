package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/golang-jwt/jwt/v5"
)

// LoadPublicKeys reads PEM files holding RSA, ECDSA or Ed25519 public keys
// (PKIX "PUBLIC KEY", PKCS#1 "RSA PUBLIC KEY" or an X.509 "CERTIFICATE").
// Private keys are refused: a verifier has no business holding one.
func LoadPublicKeys(paths []string) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		ks, err := ParsePublicKeysPEM(data)
		if err != nil {
			return nil, fmt.Errorf("public key %s: %w", p, err)
		}
		keys = append(keys, ks...)
	}
	return keys, nil
}

// ParsePublicKeysPEM parses every public key block in data.
func ParsePublicKeysPEM(data []byte) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var (
			k   any
			err error
		)
		switch block.Type {
		case "PUBLIC KEY":
			k, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			k, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(block.Bytes); err == nil {
				k = c.PublicKey
			}
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
			return nil, fmt.Errorf("holds a private key; configure the public key instead")
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s block: %w", block.Type, err)
		}
		switch k.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			keys = append(keys, k)
		default:
			return nil, fmt.Errorf("unsupported key type %T", k)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no public key found")
	}
	return keys, nil
}

// fits reports whether key can verify tokens signed with m. Filtering
// here, rather than letting the jwt library try every key, keeps an
// HMAC method away from public-key bytes and a P-384 key away from ES256.
func fits(m jwt.SigningMethod, key crypto.PublicKey) bool {
	switch m.(type) {
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		_, ok := key.(*rsa.PublicKey)
		return ok
	case *jwt.SigningMethodECDSA:
		k, ok := key.(*ecdsa.PublicKey)
		if !ok {
			return false
		}
		switch m.Alg() {
		case "ES256":
			return k.Curve == elliptic.P256()
		case "ES384":
			return k.Curve == elliptic.P384()
		case "ES512":
			return k.Curve == elliptic.P521()
		}
	case *jwt.SigningMethodEd25519:
		_, ok := key.(ed25519.PublicKey)
		return ok
	}
	return false
}
