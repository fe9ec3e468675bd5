package protocol

import (
	"errors"
	"fmt"
)

// Errors of package protocol; match them with errors.Is.
var (
	// ErrConfig wraps every Config validation failure.
	ErrConfig = errors.New("protocol: invalid config")
	// ErrChannel wraps every invalid channel name (ValidChannel).
	ErrChannel = errors.New("protocol: invalid channel")
)

// Reply codes of {"op":"err"} (HTTP-like, DESIGN §3).
const (
	CodeBadRequest      = 400
	CodeUnauthorized    = 401 // refresh: the token failed verification
	CodeForbidden       = 403
	CodeNotFound        = 404
	CodeTooManyRequests = 429
	CodeInternal        = 500
)

// RequestError is a client request the server refuses: it becomes an
// {"op":"err","ch":..,"code":..,"reason":..} reply.
type RequestError struct {
	Code   int
	Ch     string // the channel the request named, if known
	Reason string
}

func (e *RequestError) Error() string {
	return fmt.Sprintf("protocol: %d %s", e.Code, e.Reason)
}
