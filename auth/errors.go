package auth

import (
	"errors"
	"net/http"
)

// Errors of package auth. Check failures come back as *Error wrapping one
// of them; match with errors.Is.
var (
	// ErrConfig wraps every invalid configuration (keys, patterns).
	ErrConfig = errors.New("auth: invalid config")
	// ErrNoToken: the request carries no token and one is required.
	ErrNoToken = errors.New("auth: no token")
	// ErrMalformedRequest: the token could not be extracted (several
	// tokens, an Authorization header that is not Bearer, an empty token).
	ErrMalformedRequest = errors.New("auth: malformed credentials")
	// ErrInvalidToken: the token failed verification (signature, algorithm,
	// expiry, audience, issuer, claims).
	ErrInvalidToken = errors.New("auth: invalid token")
	// ErrOrigin: the Origin header is not allowed.
	ErrOrigin = errors.New("auth: origin not allowed")
)

// Error is a refused upgrade request: Status is the HTTP status to answer
// with (401 for credentials, 403 for the Origin), Reason a short text safe
// to send to the client.
type Error struct {
	Status int
	Reason string
	Err    error // one of the sentinel errors, possibly wrapping the cause
}

func (e *Error) Error() string { return "auth: " + e.Reason }

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.Err }

func unauthorized(sentinel error, reason string) *Error {
	return &Error{Status: http.StatusUnauthorized, Reason: reason, Err: sentinel}
}
