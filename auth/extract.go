package auth

import (
	"net/url"
	"strings"
)

// BearerProtocolPrefix starts the Sec-WebSocket-Protocol entry that carries
// a token ("bearer.<token>"): browsers cannot set an Authorization header
// on a WebSocket. The entry is never selected as the subprotocol.
const BearerProtocolPrefix = "bearer."

// MaxTokenLen bounds an accepted token in bytes; longer ones are refused
// before any parsing.
const MaxTokenLen = 4096

// Source says where a token was found.
type Source uint8

const (
	SourceNone        Source = iota
	SourceQuery              // ?token=
	SourceHeader             // Authorization: Bearer
	SourceSubprotocol        // Sec-WebSocket-Protocol: bearer.<token>
	SourceRefresh            // the in-band refresh op (Authenticator.Verify)
)

// String names the source.
func (s Source) String() string {
	switch s {
	case SourceQuery:
		return "query"
	case SourceHeader:
		return "header"
	case SourceSubprotocol:
		return "subprotocol"
	case SourceRefresh:
		return "refresh"
	}
	return "none"
}

// ExtractToken finds the token of an upgrade request: uri is the request
// target ("/ws?token=..."), authorization the Authorization header ("" when
// absent), protocols the offered subprotocols. It returns ("", SourceNone,
// nil) when there is none. Several tokens (in one place or in several), a
// non-Bearer Authorization scheme, an empty or oversized token are
// refused with ErrMalformedRequest: a request must not be able to present
// one token to a proxy and another to pushd.
func ExtractToken(uri, authorization string, protocols []string) (string, Source, error) {
	var (
		tok string
		src Source
	)
	found := func(t string, s Source) error {
		if src != SourceNone {
			return malformed("more than one token")
		}
		if t == "" {
			return malformed("empty token")
		}
		if len(t) > MaxTokenLen {
			return malformed("token too long")
		}
		tok, src = t, s
		return nil
	}
	if authorization != "" {
		scheme, rest, ok := strings.Cut(strings.TrimSpace(authorization), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", SourceNone, malformed("Authorization must be Bearer <token>")
		}
		if err := found(strings.TrimSpace(rest), SourceHeader); err != nil {
			return "", SourceNone, err
		}
	}
	if _, rawQuery, ok := strings.Cut(uri, "?"); ok && strings.Contains(rawQuery, "token") {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return "", SourceNone, malformed("malformed query")
		}
		if vs, ok := q["token"]; ok {
			if len(vs) != 1 {
				return "", SourceNone, malformed("more than one token")
			}
			if err := found(vs[0], SourceQuery); err != nil {
				return "", SourceNone, err
			}
		}
	}
	for _, p := range protocols {
		if IsBearerProtocol(p) {
			if err := found(p[len(BearerProtocolPrefix):], SourceSubprotocol); err != nil {
				return "", SourceNone, err
			}
		}
	}
	return tok, src, nil
}

// IsBearerProtocol reports whether a subprotocol entry carries a token.
func IsBearerProtocol(p string) bool {
	return len(p) >= len(BearerProtocolPrefix) && strings.EqualFold(p[:len(BearerProtocolPrefix)], BearerProtocolPrefix)
}

func malformed(reason string) *Error { return unauthorized(ErrMalformedRequest, reason) }
