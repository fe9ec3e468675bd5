package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/protocol"
)

// Controller sends a server API call to every node (cluster.RedisControl,
// or cluster.LocalControl with the memory broker).
type Controller interface {
	Send(ctx context.Context, m cluster.ControlMsg) error
}

// ServerAPI is the server API: JSON over HTTP on the admin listener,
// behind the same key as every admin route.
type ServerAPI struct {
	Control   Controller
	Publisher Publisher
	MaxBytes  int64      // body bound
	Node      func() any // GET /api/node document
}

// DefaultDisconnectCode is the close code of a disconnect call without
// one.
const DefaultDisconnectCode = 4000

// Routes returns the server API's routes:
//
//	POST /api/publish      {"channels":["a","b"],"data":<JSON>}  → {"results":[{"ch":"a","seq":N}|{"ch":..,"error":..,"code":..}]}
//	POST /api/disconnect   {"user":"u","code":4000,"reason":"..","reconnect_after_ms":N}
//	POST /api/subscribe    {"user":"u","ch":"room:1"}
//	POST /api/unsubscribe  {"user":"u","ch":"room:1","reason":".."}
//	GET  /api/node         this node's info
//
// disconnect, subscribe and unsubscribe reach every node through the
// control channel and answer {"sent":true} once it is published.
func (a ServerAPI) Routes() []Route {
	return []Route{
		{Pattern: "POST /api/publish", Handler: http.HandlerFunc(a.publish)},
		{Pattern: "POST /api/disconnect", Handler: http.HandlerFunc(a.control(cluster.ControlDisconnect))},
		{Pattern: "POST /api/subscribe", Handler: http.HandlerFunc(a.control(cluster.ControlSubscribe))},
		{Pattern: "POST /api/unsubscribe", Handler: http.HandlerFunc(a.control(cluster.ControlUnsubscribe))},
		{Pattern: "GET /api/node", Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, a.Node())
		})},
	}
}

type controlReq struct {
	User             string `json:"user"`
	Ch               string `json:"ch"`
	Code             *int   `json:"code"`
	Reason           string `json:"reason"`
	ReconnectAfterMs *int64 `json:"reconnect_after_ms"`
}

func (a ServerAPI) control(op string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req controlReq
		if !a.decode(w, r, &req) {
			return
		}
		m := cluster.ControlMsg{Op: op, User: req.User, Ch: req.Ch, Reason: req.Reason, AfterMs: -1}
		if op == cluster.ControlDisconnect {
			m.Code = DefaultDisconnectCode
			if req.Code != nil {
				m.Code = *req.Code
			}
			if req.ReconnectAfterMs != nil {
				if *req.ReconnectAfterMs < 0 {
					Error(w, http.StatusBadRequest, CodeBadRequest, "reconnect_after_ms must not be negative")
					return
				}
				m.AfterMs = *req.ReconnectAfterMs
			}
		} else if err := protocol.ValidChannel(req.Ch); err != nil {
			Error(w, http.StatusBadRequest, CodeBadChannel, err.Error())
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := a.Control.Send(ctx, m); err != nil {
			if errors.Is(err, cluster.ErrControl) {
				Error(w, http.StatusBadRequest, CodeBadRequest, err.Error())
				return
			}
			brokerError(w, err)
			return
		}
		writeJSON(w, map[string]any{"sent": true})
	}
}

type publishReq struct {
	Channels []string        `json:"channels"`
	Data     json.RawMessage `json:"data"`
}

type publishResult struct {
	Ch    string `json:"ch"`
	Seq   uint64 `json:"seq,omitempty"`
	Error string `json:"error,omitempty"`
	Code  Code   `json:"code,omitempty"`
}

// maxPublishChannels bounds one publish-to-many call.
const maxPublishChannels = 1000

func (a ServerAPI) publish(w http.ResponseWriter, r *http.Request) {
	var req publishReq
	if !a.decode(w, r, &req) {
		return
	}
	if len(req.Channels) == 0 || len(req.Channels) > maxPublishChannels || len(req.Data) == 0 {
		Error(w, http.StatusBadRequest, CodeBadRequest, `want "channels" (1-1000 names) and "data" (any JSON value)`)
		return
	}
	for _, ch := range req.Channels {
		if err := protocol.ValidChannel(ch); err != nil {
			Error(w, http.StatusBadRequest, CodeBadChannel, err.Error())
			return
		}
	}
	out := make([]publishResult, 0, len(req.Channels))
	for _, ch := range req.Channels {
		seq, err := a.Publisher.Publish(r.Context(), ch, req.Data)
		res := publishResult{Ch: ch, Seq: seq}
		if err != nil {
			res.Error, res.Code = err.Error(), CodeUnavailable
		}
		out = append(out, res)
	}
	writeJSON(w, map[string]any{"results": out})
}

// decode reads a JSON body into v (unknown fields refused); on failure it
// has answered and reports false.
func (a ServerAPI) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	body, ok := readBody(w, r, a.MaxBytes)
	if !ok {
		return false
	}
	if err := strictJSON(body, v); err != nil {
		Error(w, http.StatusBadRequest, CodeBadRequest, "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func strictJSON(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data")
	}
	return nil
}
