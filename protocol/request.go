package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/pushd/pushd/auth"
	"github.com/pushd/pushd/fanout"
)

// MaxChannelLen bounds a channel name in bytes.
const MaxChannelLen = 255

// MaxRequestSize bounds one client request (a JSON op) in bytes: room for
// a refresh op carrying a token of auth.MaxTokenLen.
const MaxRequestSize = auth.MaxTokenLen + 1024

// Op is a client request kind.
type Op uint8

const (
	OpSub Op = iota + 1
	OpUnsub
	OpPing
	OpRefresh // {"op":"refresh","token":".."}: in-band token refresh
	// OpPresence lists a page of a presence channel's users:
	// {"op":"presence","ch":..,"cursor":N,"limit":N}.
	OpPresence
	// OpPresenceStats counts a presence channel's connections and users.
	OpPresenceStats
)

// String returns the wire name.
func (o Op) String() string {
	switch o {
	case OpSub:
		return "sub"
	case OpUnsub:
		return "unsub"
	case OpPing:
		return "ping"
	case OpRefresh:
		return "refresh"
	case OpPresence:
		return "presence"
	case OpPresenceStats:
		return "presence_stats"
	}
	return "Op(" + strconv.Itoa(int(o)) + ")"
}

// Request is one parsed client op.
type Request struct {
	Op    Op
	Ch    string
	Since *uint64
	Token string // refresh only
	// Epoch is the epoch Since counts in, as the client last saw it in a
	// push or a subok ("": unknown). Only with Since.
	Epoch string
	// Cursor and Limit page a presence listing (0: from the start; 0:
	// the default page size).
	Cursor uint64
	Limit  int
}

// wireRequest is the JSON shape of a request. Unknown fields are ignored
// (forward compatibility).
type wireRequest struct {
	Op    *string         `json:"op"`
	Ch    *string         `json:"ch"`
	Since json.RawMessage `json:"since"`
	Token *string         `json:"token"`
	Epoch *string         `json:"epoch"`
	// presence
	Cursor json.RawMessage `json:"cursor"`
	Limit  json.RawMessage `json:"limit"`
}

// epochReason is the refusal of a malformed epoch.
const epochReason = `"epoch" must be 1 to 32 characters of 0-9, A-Z, a-z, '_' and '-'`

// ParseRequest parses one text message from a client. It never panics; a
// refused request comes back as a *RequestError with code 400 naming what
// was wrong. The channel name is validated for sub and unsub.
func ParseRequest(data []byte) (Request, error) {
	var r Request
	if len(data) > MaxRequestSize {
		return r, &RequestError{Code: CodeBadRequest, Reason: "request too large"}
	}
	var w wireRequest
	if err := json.Unmarshal(data, &w); err != nil {
		return r, &RequestError{Code: CodeBadRequest, Reason: jsonReason(err)}
	}
	if w.Ch != nil {
		r.Ch = *w.Ch
	}
	if w.Op == nil {
		return r, &RequestError{Code: CodeBadRequest, Ch: safeCh(r.Ch), Reason: `missing "op"`}
	}
	switch *w.Op {
	case "sub":
		r.Op = OpSub
	case "unsub":
		r.Op = OpUnsub
	case "ping":
		r.Op = OpPing
		return r, nil
	case "presence":
		r.Op = OpPresence
	case "presence_stats":
		r.Op = OpPresenceStats
	case "refresh":
		r.Op = OpRefresh
		if w.Token == nil || *w.Token == "" {
			return r, &RequestError{Code: CodeBadRequest, Reason: `refresh needs a non-empty "token"`}
		}
		if len(*w.Token) > auth.MaxTokenLen {
			return r, &RequestError{Code: CodeBadRequest, Reason: "token too long"}
		}
		r.Token = *w.Token
		return r, nil
	default:
		return r, &RequestError{Code: CodeBadRequest, Ch: safeCh(r.Ch), Reason: "unknown op " + quoteShort(*w.Op)}
	}
	if w.Ch == nil {
		return r, &RequestError{Code: CodeBadRequest, Reason: `missing "ch"`}
	}
	if err := ValidChannel(r.Ch); err != nil {
		return r, &RequestError{Code: CodeBadRequest, Ch: safeCh(r.Ch), Reason: err.Error()}
	}
	if r.Op == OpPresence {
		if err := parsePage(&r, w); err != nil {
			return r, err
		}
	}
	if r.Op == OpSub && len(w.Since) > 0 && string(w.Since) != "null" {
		v, err := strconv.ParseUint(string(w.Since), 10, 64)
		if err != nil {
			return r, &RequestError{Code: CodeBadRequest, Ch: r.Ch, Reason: `"since" must be an integer from 0 to 18446744073709551615`}
		}
		r.Since = &v
	}
	if r.Op == OpSub && w.Epoch != nil && *w.Epoch != "" {
		if !fanout.ValidEpoch(*w.Epoch) {
			return r, &RequestError{Code: CodeBadRequest, Ch: r.Ch, Reason: epochReason}
		}
		if r.Since == nil {
			return r, &RequestError{Code: CodeBadRequest, Ch: r.Ch, Reason: `"epoch" needs "since"`}
		}
		r.Epoch = *w.Epoch
	}
	return r, nil
}

// MaxPresenceLimit bounds a presence page (presence.MaxPageSize).
const MaxPresenceLimit = 1000

// parsePage reads a presence op's cursor and limit.
func parsePage(r *Request, w wireRequest) error {
	if len(w.Cursor) > 0 && string(w.Cursor) != "null" {
		v, err := strconv.ParseUint(string(w.Cursor), 10, 64)
		if err != nil {
			return &RequestError{Code: CodeBadRequest, Ch: r.Ch, Reason: `"cursor" must be an integer from 0 to 18446744073709551615`}
		}
		r.Cursor = v
	}
	if len(w.Limit) > 0 && string(w.Limit) != "null" {
		v, err := strconv.Atoi(string(w.Limit))
		if err != nil || v < 1 || v > MaxPresenceLimit {
			return &RequestError{Code: CodeBadRequest, Ch: r.Ch, Reason: `"limit" must be an integer from 1 to 1000`}
		}
		r.Limit = v
	}
	return nil
}

// jsonReason turns an encoding/json error into a short client-facing
// reason.
func jsonReason(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at offset %d", se.Offset)
	case errors.As(err, &te):
		if te.Field == "" {
			return "request must be a JSON object"
		}
		return fmt.Sprintf("%q must be a %s", te.Field, "string")
	}
	return "invalid JSON"
}

// safeCh returns ch if it is a valid channel name to echo back, else "".
func safeCh(ch string) string {
	if ValidChannel(ch) != nil {
		return ""
	}
	return ch
}

// quoteShort quotes s for a reason, cut to 32 bytes.
func quoteShort(s string) string {
	if len(s) > 32 {
		s = s[:32] + "..."
	}
	return strconv.Quote(s)
}

// ValidChannel checks a channel name: 1 to MaxChannelLen bytes of
// printable ASCII (0x21-0x7e) without ','; the comma separates channels in
// the URL form.
func ValidChannel(ch string) error {
	if ch == "" {
		return fmt.Errorf("%w: empty channel name", ErrChannel)
	}
	if len(ch) > MaxChannelLen {
		return fmt.Errorf("%w: channel name longer than %d bytes", ErrChannel, MaxChannelLen)
	}
	for i := 0; i < len(ch); i++ {
		if c := ch[i]; c < 0x21 || c > 0x7e || c == ',' {
			return fmt.Errorf("%w: channel name has a byte outside printable ASCII or a comma at offset %d", ErrChannel, i)
		}
	}
	return nil
}

// urlRequest is what the upgrade URL asks for.
type urlRequest struct {
	channels []string
	since    *uint64
	epoch    string
	format   fanout.Format
	pos      map[string]streamPos // per-channel positions (streams' pos=)
}

// parseURL reads /ws?ch=a,b&since=N&epoch=E&format=raw. The path must be exactly
// /ws. A refusal carries the HTTP status.
func parseURL(uri string, maxSubs int) (urlRequest, int, error) {
	var u urlRequest
	path, rawQuery, _ := strings.Cut(uri, "?")
	if path != "/ws" {
		return u, 404, errors.New("not found: the WebSocket endpoint is /ws")
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return u, 400, fmt.Errorf("bad query: %w", err)
	}
	switch f := q.Get("format"); f {
	case "", "json":
	case "raw":
		u.format = fanout.FormatRaw
	default:
		return u, 400, fmt.Errorf("format must be json or raw, not %s", quoteShort(f))
	}
	if s := q.Get("since"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return u, 400, errors.New("since must be an integer from 0 to 18446744073709551615")
		}
		u.since = &v
	}
	if e := q.Get("epoch"); e != "" {
		if !fanout.ValidEpoch(e) {
			return u, 400, errors.New("epoch must be 1 to 32 characters of 0-9, A-Z, a-z, '_' and '-'")
		}
		if u.since == nil {
			return u, 400, errors.New("epoch needs since")
		}
		u.epoch = e
	}
	for _, list := range q["ch"] {
		for ch := range strings.SplitSeq(list, ",") {
			if err := ValidChannel(ch); err != nil {
				return u, 400, err
			}
			if !containsString(u.channels, ch) {
				u.channels = append(u.channels, ch)
			}
		}
	}
	if len(u.channels) > maxSubs {
		return u, 429, fmt.Errorf("more than %d channels", maxSubs)
	}
	return u, 0, nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
