package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/protocol"
)

// Publisher is what POST /publish needs: the node's broker.
type Publisher interface {
	Publish(ctx context.Context, channel string, payload []byte) (uint64, error)
}

// PublishRoute is POST /publish?ch=<channel>: the body is the payload
// (JSON is embedded in pushes as is; anything else becomes a JSON string,
// or raw bytes for format=raw subscribers). It goes through the broker
// like every publication, never straight to the hub. Replies
// {"ch":..,"seq":N}; 400 bad channel, 413 body over maxBytes, 503
// (Retry-After: 1) when the channel's fan-out is behind by more than its
// mailbox bound, while Redis is unavailable, or while shutting down.
func PublishRoute(p Publisher, maxBytes int64) Route {
	return Route{Pattern: "POST /publish", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ch := r.URL.Query().Get("ch")
		if err := protocol.ValidChannel(ch); err != nil {
			Error(w, http.StatusBadRequest, CodeBadChannel, err.Error())
			return
		}
		body, ok := readBody(w, r, maxBytes)
		if !ok {
			return
		}
		seq, err := p.Publish(r.Context(), ch, body)
		if err != nil {
			brokerError(w, err)
			return
		}
		out := make([]byte, 0, 32+len(ch))
		out = append(out, `{"ch":`...)
		out = fanout.AppendJSONString(out, ch)
		out = append(out, `,"seq":`...)
		out = strconv.AppendUint(out, seq, 10)
		out = append(out, "}\n"...)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	})}
}

// readBody reads at most maxBytes of the body; on failure it has answered
// (413 or 400) and reports false.
func readBody(w http.ResponseWriter, r *http.Request, maxBytes int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			Error(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "body larger than "+strconv.FormatInt(maxBytes, 10)+" bytes")
			return nil, false
		}
		Error(w, http.StatusBadRequest, CodeBadRequest, "reading body: "+err.Error())
		return nil, false
	}
	return body, true
}

// brokerError maps a broker error onto a status and a code.
func brokerError(w http.ResponseWriter, err error) {
	status, code := http.StatusInternalServerError, CodeInternal
	switch {
	case errors.Is(err, cluster.ErrOverloaded), errors.Is(err, cluster.ErrUnavailable):
		// Backpressure, or Redis down: fail fast, the backend retries
		// instead of pushd buffering without bound.
		w.Header().Set("Retry-After", "1")
		status, code = http.StatusServiceUnavailable, CodeUnavailable
	case errors.Is(err, cluster.ErrClosed):
		status, code = http.StatusServiceUnavailable, CodeUnavailable
	case errors.Is(err, cluster.ErrChannel):
		status, code = http.StatusBadRequest, CodeBadChannel
	}
	Error(w, status, code, err.Error())
}
