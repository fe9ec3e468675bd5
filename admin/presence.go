package admin

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/pushd/pushd/presence"
	"github.com/pushd/pushd/protocol"
)

// PresenceReader reads presence (*presence.Tracker).
type PresenceReader interface {
	Members(ctx context.Context, ch string, cursor uint64, limit int) (presence.Page, error)
	Stats(ctx context.Context, ch string) (presence.Stats, error)
}

// PresenceAPI serves presence on the server API (behind the key like
// every admin route).
type PresenceAPI struct {
	Presence PresenceReader
	// Enabled reports whether ch is a presence channel (-presence).
	Enabled func(ch string) bool
}

// Routes returns:
//
//	GET /api/presence?ch=room:1&cursor=0&limit=100  → {"ch":..,"users":[..],"cursor":N}  (N 0: last page; limit 1-1000)
//	GET /api/presence/stats?ch=room:1               → {"ch":..,"conns":N,"users":N}
//
// A channel that is not a presence channel is 404 not_found; a bad
// parameter 400; the store unreachable 503 unavailable.
func (a PresenceAPI) Routes() []Route {
	return []Route{
		{Pattern: "GET /api/presence", Handler: http.HandlerFunc(a.members)},
		{Pattern: "GET /api/presence/stats", Handler: http.HandlerFunc(a.stats)},
	}
}

// channel reads and checks ?ch=; on failure it has answered.
func (a PresenceAPI) channel(w http.ResponseWriter, r *http.Request) (string, bool) {
	ch := r.URL.Query().Get("ch")
	if err := protocol.ValidChannel(ch); err != nil {
		Error(w, http.StatusBadRequest, CodeBadChannel, err.Error())
		return "", false
	}
	if !a.Enabled(ch) {
		Error(w, http.StatusNotFound, CodeNotFound, "presence is not enabled for this channel (-presence)")
		return "", false
	}
	return ch, true
}

func (a PresenceAPI) members(w http.ResponseWriter, r *http.Request) {
	ch, ok := a.channel(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	var cursor uint64
	limit := presence.DefaultPageSize
	var err error
	if v := q.Get("cursor"); v != "" {
		if cursor, err = strconv.ParseUint(v, 10, 64); err != nil {
			Error(w, http.StatusBadRequest, CodeBadRequest, "cursor must be an integer from 0 to 18446744073709551615")
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > presence.MaxPageSize {
			Error(w, http.StatusBadRequest, CodeBadRequest, "limit must be an integer from 1 to 1000")
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	p, err := a.Presence.Members(ctx, ch, cursor, limit)
	if err != nil {
		presenceError(w, err)
		return
	}
	if p.Users == nil {
		p.Users = []string{}
	}
	writeJSON(w, map[string]any{"ch": ch, "users": p.Users, "cursor": p.Cursor})
}

func (a PresenceAPI) stats(w http.ResponseWriter, r *http.Request) {
	ch, ok := a.channel(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	st, err := a.Presence.Stats(ctx, ch)
	if err != nil {
		presenceError(w, err)
		return
	}
	writeJSON(w, map[string]any{"ch": ch, "conns": st.Conns, "users": st.Users})
}

func presenceError(w http.ResponseWriter, err error) {
	if errors.Is(err, context.DeadlineExceeded) {
		Error(w, http.StatusGatewayTimeout, CodeTimeout, "presence store did not answer in time")
		return
	}
	w.Header().Set("Retry-After", "1")
	Error(w, http.StatusServiceUnavailable, CodeUnavailable, "presence unavailable: "+err.Error())
}
