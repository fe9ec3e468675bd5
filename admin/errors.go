package admin

import "errors"

// Errors returned by this package.
var (
	// ErrConfig reports an invalid Config.
	ErrConfig = errors.New("admin: invalid config")
	// ErrListen reports that the admin listener could not be opened.
	ErrListen = errors.New("admin: listen")
)

// Code is a stable machine-readable error code in a JSON error body.
type Code string

// Error codes. They are part of the HTTP API: never rename one.
const (
	CodeUnauthorized     Code = "unauthorized"       // 401: no or wrong API key
	CodeBadRequest       Code = "bad_request"        // 400: malformed body or parameter
	CodeBadChannel       Code = "bad_channel"        // 400: channel name not valid
	CodeNotFound         Code = "not_found"          // 404: no such route
	CodeMethodNotAllowed Code = "method_not_allowed" // 405
	CodeTooLarge         Code = "too_large"          // 413: body over the limit
	CodeUnavailable      Code = "unavailable"        // 503: broker down, overloaded or shutting down (Retry-After may be set)
	CodeTimeout          Code = "timeout"            // 504: nodes did not answer in time
	CodeInternal         Code = "internal"           // 500
)
