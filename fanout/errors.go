package fanout

import "errors"

// Errors of the fanout package. Subscribers return ErrQueueFull and
// ErrClosed from Queue; callers match the others with errors.Is.
var (
	// ErrQueueFull is what a Subscriber's Queue returns when the frame would
	// take its pending bytes over its budget. Nothing was queued; the hub
	// applies the channel's slow-consumer policy.
	ErrQueueFull = errors.New("fanout: subscriber queue full")
	// ErrClosed is what a Subscriber's Queue returns once the connection is
	// closing. The hub stops delivering to it.
	ErrClosed = errors.New("fanout: subscriber closed")
	// ErrConfig wraps every Config validation failure.
	ErrConfig = errors.New("fanout: invalid config")
	// ErrHubClosed is returned by Subscribe after Shutdown.
	ErrHubClosed = errors.New("fanout: hub closed")
	// ErrSlowConsumer is returned by Subscribe when the subscriber's queue
	// overflowed while its subscribe reply or recovered history was queued
	// and the channel's policy is PolicyDisconnect (the subscriber was
	// closed with 4001).
	ErrSlowConsumer = errors.New("fanout: slow consumer")
)
