package cluster

import "errors"

// Errors of package cluster; match them with errors.Is.
var (
	// ErrConfig wraps every configuration failure.
	ErrConfig = errors.New("cluster: invalid config")
	// ErrClosed is returned by Publish after Shutdown.
	ErrClosed = errors.New("cluster: broker closed")
	// ErrOverloaded is returned by Publish when the hub refused the
	// publication (fanout.Admitter): the channel's fan-out is behind its
	// publishers; retry later.
	ErrOverloaded = errors.New("cluster: channel overloaded, retry later")
	// ErrNoHandler is returned by Publish before Attach.
	ErrNoHandler = errors.New("cluster: no publication handler attached")
)
