package auth

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzExtractToken drives the whole token path of an upgrade request
// (query, Authorization header, subprotocol list, then verification) with
// arbitrary bytes. Properties: no panic; a token is returned only with a
// source and never longer than MaxTokenLen; a refusal is always an *Error
// with status 401 wrapping one of the package's sentinels; the subprotocol
// list is split at an arbitrary comma so entries of any shape occur.
func FuzzExtractToken(f *testing.F) {
	for _, s := range []struct{ uri, authz, protos string }{
		{"/ws?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.sig", "", ""},
		{"/ws", "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln", ""},
		{"/ws", "", "pushd.v1,bearer.eyJhbGciOiJFUzI1NiJ9.e30.c2ln"},
		{"/ws?token=a&token=b", "", ""},
		{"/ws?token=%zz", "", ""},
		{"/ws?ch=a,b&since=3&token=", "", ""},
		{"/ws", "Basic dTpw", ""},
		{"/ws", "Bearer", "bearer."},
		{"/ws?token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5fQ.", "", ""},
		{"/ws?" + strings.Repeat("token", 100), "bEaReR  x ", "BEARER.x,bearer.y"},
	} {
		f.Add(s.uri, s.authz, s.protos)
	}
	a, err := New(Config{Keys: KeyConfig{HS256Secret: []byte(strings.Repeat("k", 32)), Now: func() time.Time { return time.Unix(1e9, 0) }}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, uri, authz, protos string) {
		var list []string
		if protos != "" {
			list = strings.Split(protos, ",")
		}
		tok, src, err := ExtractToken(uri, authz, list)
		switch {
		case err != nil:
			checkRefusal(t, err)
		case src == SourceNone && tok != "":
			t.Fatalf("token %q without a source", tok)
		case src != SourceNone && (tok == "" || len(tok) > MaxTokenLen):
			t.Fatalf("source %v with token of %d bytes", src, len(tok))
		}
		if _, err := a.Check(Request{URI: uri, Authorization: authz, Protocols: list}); err != nil {
			checkRefusal(t, err)
		}
	})
}

func checkRefusal(t *testing.T, err error) {
	t.Helper()
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 401 || ae.Reason == "" {
		t.Fatalf("refusal %v is not a 401 *Error", err)
	}
	if !errors.Is(err, ErrMalformedRequest) && !errors.Is(err, ErrInvalidToken) && !errors.Is(err, ErrNoToken) {
		t.Fatalf("refusal %v wraps no sentinel", err)
	}
}
