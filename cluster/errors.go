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
	// ErrEnvelope is returned by DecodeEnvelope for bytes that are not a
	// durable envelope.
	ErrEnvelope = errors.New("cluster: malformed durable envelope")
	// ErrUnavailable is returned by the Redis broker's Publish, Subscribe
	// and History while its Redis path is broken (the canary is late or the
	// connection is down): they fail fast instead of waiting.
	ErrUnavailable = errors.New("cluster: redis unavailable")
	// ErrChannel is returned for a channel name the broker cannot map onto
	// Redis (Redis Cluster: a name starting with '}' has no hash tag).
	ErrChannel = errors.New("cluster: channel name not usable with redis")
)
