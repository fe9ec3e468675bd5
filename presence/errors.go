package presence

import "errors"

// Errors of package presence; match them with errors.Is.
var (
	// ErrConfig wraps every Config validation failure.
	ErrConfig = errors.New("presence: invalid config")
	// ErrUnavailable wraps a Store failure (Redis unreachable, timeout).
	ErrUnavailable = errors.New("presence: store unavailable")
)
