package poller

import "errors"

// Errors returned by the poller. Callers branch on them with errors.Is.
var (
	// ErrConfig wraps every Config validation failure.
	ErrConfig = errors.New("poller: invalid config")
	// ErrClosed is returned by Send and Close on a connection that is
	// closing or closed.
	ErrClosed = errors.New("poller: connection closed")
	// ErrQueueFull is returned by Send when the frame would take the
	// connection's pending bytes over MaxPendingBytes. Nothing was queued.
	ErrQueueFull = errors.New("poller: outbound queue full")
	// ErrServerClosed is returned by Serve after Shutdown.
	ErrServerClosed = errors.New("poller: server closed")
	// ErrRefused is returned by Attach when admission turned the socket
	// away (a 503 was written to it).
	ErrRefused = errors.New("poller: connection refused")
	// ErrListenerClosed is returned by the listener's Accept after Close.
	// Its text contains "closed": netpoll stops its accept loop on that.
	ErrListenerClosed = errors.New("poller: listener closed")
	// ErrTLSBuffer ends a wss connection whose decrypted input did not
	// fit the read buffer (a bug, never the peer's doing: the buffer is
	// sized for it).
	ErrTLSBuffer = errors.New("poller: tls plaintext exceeds the read buffer")
)

// RejectError rejects an upgrade request with an HTTP status. Handlers
// return it from Upgrade.
type RejectError struct {
	Status int
	Reason string
	// RetryAfter, when positive, is sent as a Retry-After header (seconds).
	RetryAfter int
}

func (e *RejectError) Error() string { return "poller: upgrade rejected: " + e.Reason }
