package main

import (
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/protocol"
)

// publish serves POST /publish?ch=<channel> on the admin listener: the body
// is the payload (JSON is embedded in pushes as is; anything else becomes a
// JSON string, or raw bytes for format=raw subscribers). It goes through
// the broker like every publication, never straight to the hub. Replies
// {"ch":..,"seq":N}; 400 bad channel, 413 body over -max-publish-bytes,
// 503 (Retry-After: 1) when the channel's fan-out is behind by more than
// its mailbox bound, while Redis is unavailable, or while shutting down.
func (a *pushApp) publish(w http.ResponseWriter, r *http.Request) {
	ch := r.URL.Query().Get("ch")
	if err := protocol.ValidChannel(ch); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxPublish))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			httpError(w, http.StatusRequestEntityTooLarge, "body larger than "+strconv.FormatInt(a.maxPublish, 10)+" bytes")
			return
		}
		httpError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	seq, err := a.broker.Publish(r.Context(), ch, body)
	if err != nil {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, cluster.ErrOverloaded):
			// Backpressure: the channel's fan-out is behind; the backend
			// retries instead of pushd buffering without bound.
			w.Header().Set("Retry-After", "1")
			status = http.StatusServiceUnavailable
		case errors.Is(err, cluster.ErrClosed):
			status = http.StatusServiceUnavailable
		case errors.Is(err, cluster.ErrUnavailable):
			// Redis is down: fail fast, the backend retries.
			w.Header().Set("Retry-After", "1")
			status = http.StatusServiceUnavailable
		case errors.Is(err, cluster.ErrChannel):
			status = http.StatusBadRequest
		}
		httpError(w, status, err.Error())
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
}

// httpError writes a JSON error body {"error":".."}.
func httpError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b := append([]byte(`{"error":`), fanout.AppendJSONString(nil, msg)...)
	_, _ = w.Write(append(b, "}\n"...))
}
