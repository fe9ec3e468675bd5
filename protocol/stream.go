package protocol

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/auth"
	"github.com/pushd/pushd/fanout"
	"github.com/pushd/pushd/poller"
)

// The HTTP-stream transports (poller.Streamer): for clients behind
// proxies that strip Upgrade, and for EventSource.
const (
	// SSEPath serves Server-Sent Events (text/event-stream).
	SSEPath = "/sse"
	// StreamPath serves newline-delimited JSON (application/x-ndjson)
	// for fetch + ReadableStream clients that must send headers.
	StreamPath = "/stream"
	// StreamRetry is the reconnect delay an SSE stream announces first
	// ("retry:"); the drain's hint replaces it with its jittered delay.
	StreamRetryMs = 1000
)

var (
	_ poller.Streamer = (*Handler)(nil)

	sseHeartbeat    = []byte(": hb\n\n")
	ndjsonHeartbeat = []byte("\n")
)

// streaming reports whether f is an HTTP-stream format.
func streaming(f fanout.Format) bool { return f == fanout.FormatSSE || f == fanout.FormatNDJSON }

// Stream implements poller.Streamer: GET /sse and GET /stream (OPTIONS for
// a CORS preflight), with the same checks as Upgrade — readiness (503),
// the URL (400, 404, 429), Auth (403 Origin, 401 token; the token from
// ?token= or Authorization: Bearer), channel permissions (403) — each
// refusal a whole response with the reason as text. Other paths are
// passed on (the demo's files, else 400).
func (h *Handler) Stream(c *poller.Conn, r *poller.Request) (poller.StreamResponse, bool) {
	path, _, _ := strings.Cut(r.URI, "?")
	var f fanout.Format
	switch path {
	case SSEPath:
		f = fanout.FormatSSE
	case StreamPath:
		f = fanout.FormatNDJSON
	default:
		return poller.StreamResponse{}, false
	}
	cors := corsHeader(r.Origin)
	switch r.Method {
	case http.MethodGet:
	case http.MethodOptions:
		return h.preflight(r, cors), true
	default:
		return refusal(http.StatusMethodNotAllowed, "use GET", cors+"Allow: GET, OPTIONS\r\n"), true
	}
	if h.cfg.Ready != nil && !h.cfg.Ready() {
		h.notReady.Add(1)
		return refusal(http.StatusServiceUnavailable, "broker not ready", cors+"Retry-After: 1\r\n"), true
	}
	u, status, err := parseStreamURL(r.URI, r.LastEventID, h.cfg.MaxSubscriptions)
	if err != nil {
		return refusal(status, err.Error(), cors), true
	}
	if f == fanout.FormatSSE && containsString(u.channels, fanout.SSEControlEvent) {
		return refusal(http.StatusBadRequest, "channel "+quoteShort(fanout.SSEControlEvent)+" is pushd's own SSE event type; use /stream or /ws", cors), true
	}
	u.format = f
	var g auth.Grant
	if h.cfg.Auth != nil {
		g, err = h.cfg.Auth.Check(auth.Request{URI: r.URI, Origin: r.Origin, Authorization: r.Authorization})
		if err != nil {
			h.authFails.Add(1)
			var ae *auth.Error
			if errors.As(err, &ae) {
				return refusal(ae.Status, ae.Reason, cors), true
			}
			return refusal(http.StatusUnauthorized, "unauthorized", cors), true
		}
		if pc := g.PersonalChannel(); pc != "" && (ValidChannel(pc) != nil || f == fanout.FormatSSE && pc == fanout.SSEControlEvent) {
			h.authFails.Add(1)
			return refusal(http.StatusUnauthorized, "token sub is not usable in a channel name", cors), true
		}
	}
	s := newSession(h, c, u, g)
	for _, ch := range u.channels {
		if !s.allowed(ch) {
			h.forbidden.Add(1)
			return refusal(http.StatusForbidden, "channel "+quoteShort(ch)+" is not allowed", cors), true
		}
	}
	if !g.Expires.IsZero() {
		// No refresh over a one-way stream: the stream ends at exp with
		// a close event (4003); the client reconnects with a new token.
		c.SetExpiry(g.Expires, StatusTokenExpired, "token expired")
		s.expires.Store(g.Expires.UnixNano())
	}
	c.SetValue(s)
	resp := poller.StreamResponse{Open: true}
	if f == fanout.FormatSSE {
		resp.Header = "Content-Type: text/event-stream; charset=utf-8\r\n" + cors
		resp.Body = []byte("retry: " + strconv.Itoa(StreamRetryMs) + "\n\n")
		resp.Heartbeat = sseHeartbeat
	} else {
		resp.Header = "Content-Type: application/x-ndjson; charset=utf-8\r\n" + cors
		resp.Heartbeat = ndjsonHeartbeat
	}
	return resp, true
}

// StreamEnd implements poller.Streamer: a stream's last event says why it
// ended, {"op":"close","code":N,"reason":".."} (4001 slow consumer, 4003
// token expired, 1001/1012 drain or shutdown, ...).
func (h *Handler) StreamEnd(c *poller.Conn, code ws.StatusCode, reason string) []byte {
	s := sessionOf(c)
	if s == nil {
		return nil
	}
	b := append(make([]byte, 0, 48+len(reason)), `{"op":"close","code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"reason":`...)
	b = fanout.AppendJSONString(b, reason)
	return fanout.EncodeStreamControl(s.format, append(b, '}'))
}

// ReconnectHint returns the drain's reconnect hint for c, nil when c
// cannot take one (format=raw: it would reach the application as data):
// the {"op":"reconnect","after_ms":N} text frame on a WebSocket; on SSE a
// "retry: N" line (EventSource's own reconnect delay) and the same object
// as a pushd event; on NDJSON the object as a line.
func (h *Handler) ReconnectHint(c *poller.Conn, afterMs int64) []byte {
	s := sessionOf(c)
	if s == nil {
		return nil
	}
	return s.reconnectHint(afterMs)
}

// reconnectHint is ReconnectHint for s.
func (s *session) reconnectHint(afterMs int64) []byte {
	switch s.format {
	case fanout.FormatRaw:
		return nil
	case fanout.FormatSSE:
		ev := s.frame(reconnectFrame(afterMs))
		b := make([]byte, 0, 24+len(ev))
		b = append(b, "retry: "...)
		b = strconv.AppendInt(b, afterMs, 10)
		b = append(b, '\n')
		return append(b, ev...)
	}
	return s.frame(reconnectFrame(afterMs))
}

// frame turns a reply (a WebSocket text frame) into the session's
// transport framing: itself on a WebSocket, an "event: pushd" event on
// SSE, a line on NDJSON. Replies are rare; pushes never pass here (the hub
// encodes them once per format).
func (s *session) frame(b []byte) []byte {
	if !streaming(s.format) {
		return b
	}
	return fanout.EncodeStreamControl(s.format, framePayload(b))
}

// framePayload returns the payload of an unmasked server frame.
func framePayload(fr []byte) []byte {
	switch n := fr[1] & 0x7f; n {
	case 126:
		return fr[4:]
	case 127:
		return fr[10:]
	default:
		return fr[2:]
	}
}

// preflight answers a CORS preflight: 204 allowing GET with the headers a
// fetch-based stream sends, or the Origin refusal (403).
func (h *Handler) preflight(r *poller.Request, cors string) poller.StreamResponse {
	if h.cfg.Auth != nil {
		if _, err := h.cfg.Auth.Check(auth.Request{URI: r.URI, Origin: r.Origin}); errors.Is(err, auth.ErrOrigin) {
			var ae *auth.Error
			reason := "origin not allowed"
			if errors.As(err, &ae) {
				reason = ae.Reason
			}
			return refusal(http.StatusForbidden, reason, "")
		}
	}
	return poller.StreamResponse{Status: http.StatusNoContent, Header: cors +
		"Access-Control-Allow-Methods: GET\r\nAccess-Control-Allow-Headers: Authorization, Last-Event-ID\r\nAccess-Control-Max-Age: 600\r\n"}
}

// corsHeader lets the request's Origin read the response (the Origin
// policy, when configured, has decided before anything is streamed).
func corsHeader(origin string) string {
	if origin == "" || strings.ContainsAny(origin, "\r\n") {
		return ""
	}
	return "Access-Control-Allow-Origin: " + origin + "\r\nVary: Origin\r\n"
}

// refusal is a whole text/plain response.
func refusal(status int, reason, header string) poller.StreamResponse {
	return poller.StreamResponse{Status: status, Header: "Content-Type: text/plain; charset=utf-8\r\n" + header, Body: []byte(reason + "\n")}
}

// streamPos is one channel's resume position from a pos= parameter.
type streamPos struct {
	since uint64
	epoch string
}

// parseStreamURL reads /sse?ch=a&ch=b,c&since=N&epoch=E&pos=<ch>:<epoch>:<seq>
// (and /stream alike). lastEventID (the Last-Event-ID header, or the
// last_event_id parameter when the header is absent) is "<epoch>:<seq>",
// an SSE event id: it stands for since=<seq>&epoch=<epoch> and wins over
// them. pos= gives one channel its own position (and subscribes it): it
// wins over both for that channel; the JS client resumes several channels
// with it. format= is refused: the path chooses the framing.
func parseStreamURL(uri, lastEventID string, maxSubs int) (urlRequest, int, error) {
	_, rawQuery, _ := strings.Cut(uri, "?")
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return urlRequest{}, 400, fmt.Errorf("bad query: %w", err)
	}
	if q.Has("format") {
		return urlRequest{}, 400, errors.New("format does not apply to /sse and /stream")
	}
	u, status, err := parseURL("/ws?"+rawQuery, maxSubs)
	if err != nil {
		return u, status, err
	}
	if lastEventID == "" {
		lastEventID = q.Get("last_event_id")
	}
	if lastEventID != "" {
		epoch, seq, err := parseEventID(lastEventID)
		if err != nil {
			return u, 400, fmt.Errorf("Last-Event-ID: %w", err)
		}
		u.since, u.epoch = &seq, epoch
	}
	for _, p := range q["pos"] {
		i := strings.LastIndexByte(p, ':')
		if i < 0 {
			return u, 400, errors.New("pos must be <channel>:<epoch>:<seq>")
		}
		j := strings.LastIndexByte(p[:i], ':')
		if j < 0 {
			return u, 400, errors.New("pos must be <channel>:<epoch>:<seq>")
		}
		ch := p[:j]
		if err := ValidChannel(ch); err != nil {
			return u, 400, fmt.Errorf("pos: %w", err)
		}
		epoch, seq, err := parseEventID(p[j+1:])
		if err != nil {
			return u, 400, fmt.Errorf("pos: %w", err)
		}
		if u.pos == nil {
			u.pos = make(map[string]streamPos)
		}
		u.pos[ch] = streamPos{since: seq, epoch: epoch}
		if !containsString(u.channels, ch) {
			u.channels = append(u.channels, ch)
		}
	}
	if len(u.channels) > maxSubs {
		return u, 429, fmt.Errorf("more than %d channels", maxSubs)
	}
	return u, 0, nil
}

// parseEventID parses "<epoch>:<seq>" (epoch may be empty: a channel with
// no stream yet).
func parseEventID(id string) (epoch string, seq uint64, err error) {
	e, s, ok := strings.Cut(id, ":")
	if !ok {
		return "", 0, errors.New("an event id is <epoch>:<seq>")
	}
	if e != "" && !fanout.ValidEpoch(e) {
		return "", 0, errors.New(epochReason)
	}
	seq, err = strconv.ParseUint(s, 10, 64)
	if err != nil {
		return "", 0, errors.New("the seq of an event id must be an integer from 0 to 18446744073709551615")
	}
	return e, seq, nil
}
