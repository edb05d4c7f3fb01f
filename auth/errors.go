// Package auth verifies the JWTs that callers present and decides which
// tilesets they may read. It knows nothing of S3 or caching: the proxy
// asks it "who is this and may they read tileset X" before anything else.
package auth

import "errors"

// ErrNoToken means the request carried no token in any accepted place.
var ErrNoToken = errors.New("no token")

// ErrInvalid is matched (errors.Is) by every error that means "a token was
// presented but cannot be trusted": the 401 invalid_token family.
var ErrInvalid = errors.New("invalid token")

// ErrNotGranted means the token is valid but does not grant the tileset.
var ErrNotGranted = errors.New("tileset not granted")

// invalidError is one reason a token was refused; it matches ErrInvalid so
// callers map the whole family with one check, while metrics keep the reason.
type invalidError struct{ reason string }

func (e *invalidError) Error() string        { return "invalid token: " + e.reason }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

// Reasons a presented token is refused. Each matches ErrInvalid.
var (
	ErrMalformed    error = &invalidError{"malformed"}
	ErrBadSignature error = &invalidError{"bad_signature"}
	ErrBadAlgorithm error = &invalidError{"bad_algorithm"}
	ErrUnknownKey   error = &invalidError{"unknown_key"}
	ErrExpired      error = &invalidError{"expired"}
	ErrNotYetValid  error = &invalidError{"not_yet_valid"}
	ErrBadIssuer    error = &invalidError{"bad_issuer"}
	ErrBadAudience  error = &invalidError{"bad_audience"}
	ErrBadGrants    error = &invalidError{"bad_grants"}
	// ErrBadScope: a scoped grant is malformed (a bad zoom range, a bbox
	// not four numbers in range, an area not configured).
	ErrBadScope error = &invalidError{"bad_scope"}
	// ErrLifetime: the token may be used for longer than
	// auth.max_token_lifetime allows.
	ErrLifetime error = &invalidError{"lifetime_too_long"}
	// ErrRevoked: the token's subject or ID is revoked (revocation.file,
	// `tileproxy revoke`).
	ErrRevoked error = &invalidError{"revoked"}
)

// Reason returns a short, bounded label for err, for metrics and logs:
// "no_token", "not_granted", one of the invalid reasons, or "other".
func Reason(err error) string {
	var ie *invalidError
	switch {
	case errors.Is(err, ErrNoToken):
		return "no_token"
	case errors.Is(err, ErrNotGranted):
		return "not_granted"
	case errors.As(err, &ie):
		return ie.reason
	}
	return "other"
}
