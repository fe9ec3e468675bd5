package protocol

import (
	"errors"
	"strings"
	"testing"

	"github.com/pushd/pushd/fanout"
)

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		in     string
		op     Op
		ch     string
		since  int64 // -1: nil
		code   int
		reason string
	}{
		{`{"op":"ping"}`, OpPing, "", -1, 0, ""},
		{`{"op":"sub","ch":"room:1"}`, OpSub, "room:1", -1, 0, ""},
		{`{"op":"sub","ch":"room:1","since":123}`, OpSub, "room:1", 123, 0, ""},
		{`{"op":"sub","ch":"a","since":0}`, OpSub, "a", 0, 0, ""},
		{`{"op":"sub","ch":"a","since":null}`, OpSub, "a", -1, 0, ""},
		{`{"op":"sub","ch":"a","since":18446744073709551615}`, OpSub, "a", -2, 0, ""},
		{`{"op":"unsub","ch":"room:1","extra":[1,2]}`, OpUnsub, "room:1", -1, 0, ""},
		{`{"op":"sub","ch":"a","since":18446744073709551616}`, 0, "", 0, 400, "since"},
		{`{"op":"sub","ch":"a","since":-1}`, 0, "", 0, 400, "since"},
		{`{"op":"sub","ch":"a","since":1.5}`, 0, "", 0, 400, "since"},
		{`{"op":"sub","ch":"a","since":"5"}`, 0, "", 0, 400, "since"},
		{`{"op":"sub","ch":"a","since":1e400}`, 0, "", 0, 400, "since"},
		{`{"op":"sub"}`, 0, "", 0, 400, `missing "ch"`},
		{`{"op":"sub","ch":""}`, 0, "", 0, 400, "empty channel"},
		{`{"op":"sub","ch":"has space"}`, 0, "", 0, 400, "printable"},
		{`{"op":"sub","ch":"` + strings.Repeat("x", 256) + `"}`, 0, "", 0, 400, "longer"},
		{`{"op":"sub","ch":7}`, 0, "", 0, 400, `"ch" must be a string`},
		{`{"op":1}`, 0, "", 0, 400, `"op" must be a string`},
		{`{"op":"publish","ch":"a"}`, 0, "", 0, 400, "unknown op"},
		{`{"ch":"a"}`, 0, "", 0, 400, `missing "op"`},
		{`[1,2]`, 0, "", 0, 400, "JSON object"},
		{`"sub"`, 0, "", 0, 400, "JSON object"},
		{`{"op":"sub",`, 0, "", 0, 400, "invalid JSON"},
		{``, 0, "", 0, 400, "invalid JSON"},
		{`nul`, 0, "", 0, 400, "invalid JSON"},
		{strings.Repeat(" ", MaxRequestSize+1), 0, "", 0, 400, "too large"},
	} {
		r, err := ParseRequest([]byte(tc.in))
		if tc.code != 0 {
			var re *RequestError
			if !errors.As(err, &re) || re.Code != tc.code || !strings.Contains(re.Reason, tc.reason) {
				t.Errorf("ParseRequest(%.40q) = %+v, %v; want code %d reason ~%q", tc.in, r, err, tc.code, tc.reason)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseRequest(%.40q): %v", tc.in, err)
			continue
		}
		if r.Op != tc.op || r.Ch != tc.ch {
			t.Errorf("ParseRequest(%.40q) = %+v", tc.in, r)
		}
		switch {
		case tc.since == -1 && r.Since != nil, tc.since >= 0 && (r.Since == nil || *r.Since != uint64(tc.since)),
			tc.since == -2 && (r.Since == nil || *r.Since != ^uint64(0)):
			t.Errorf("ParseRequest(%.40q).Since = %v, want %d", tc.in, r.Since, tc.since)
		}
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		uri    string
		status int
		chans  string
		raw    bool
		since  int64
	}{
		{"/ws", 0, "", false, -1},
		{"/ws?ch=a,b&ch=c,a", 0, "a|b|c", false, -1},
		{"/ws?ch=login:7f3a&since=0", 0, "login:7f3a", false, 0},
		{"/ws?ch=a&format=raw", 0, "a", true, -1},
		{"/ws?ch=a&format=xml", 400, "", false, -1},
		{"/ws?ch=a&since=-1", 400, "", false, -1},
		{"/ws?ch=a,,b", 400, "", false, -1},
		{"/ws?ch=a%20b", 400, "", false, -1},
		{"/ws?ch=%zz", 400, "", false, -1},
		{"/", 404, "", false, -1},
		{"/wss", 404, "", false, -1},
		{"/ws?ch=1,2,3,4,5", 429, "", false, -1},
	} {
		u, status, err := parseURL(tc.uri, 4)
		if status != tc.status || (status == 0) != (err == nil) {
			t.Errorf("parseURL(%q) status %d err %v, want %d", tc.uri, status, err, tc.status)
			continue
		}
		if status != 0 {
			continue
		}
		if got := strings.Join(u.channels, "|"); got != tc.chans || (u.format == 1) != tc.raw {
			t.Errorf("parseURL(%q) = %+v", tc.uri, u)
		}
		if (tc.since < 0) != (u.since == nil) || (u.since != nil && *u.since != uint64(tc.since)) {
			t.Errorf("parseURL(%q).since = %v", tc.uri, u.since)
		}
	}
}

// TestParseEpoch covers the resume request's epoch, in the op and in the
// URL: valid with since, refused with a clear reason otherwise.
func TestParseEpoch(t *testing.T) {
	for _, tc := range []struct {
		in, epoch, reason string
	}{
		{`{"op":"sub","ch":"a","since":5,"epoch":"6752a3b10f4240"}`, "6752a3b10f4240", ""},
		{`{"op":"sub","ch":"a","since":0,"epoch":"A-_z9"}`, "A-_z9", ""},
		{`{"op":"sub","ch":"a","since":5,"epoch":""}`, "", ""},
		{`{"op":"sub","ch":"a","since":5,"epoch":null}`, "", ""},
		{`{"op":"unsub","ch":"a","epoch":"zz"}`, "", ""},
		{`{"op":"sub","ch":"a","epoch":"abc"}`, "", `"epoch" needs "since"`},
		{`{"op":"sub","ch":"a","since":5,"epoch":"a b"}`, "", `"epoch" must be`},
		{`{"op":"sub","ch":"a","since":5,"epoch":"a\"b"}`, "", `"epoch" must be`},
		{`{"op":"sub","ch":"a","since":5,"epoch":"é"}`, "", `"epoch" must be`},
		{`{"op":"sub","ch":"a","since":5,"epoch":"` + strings.Repeat("a", 33) + `"}`, "", `"epoch" must be`},
		{`{"op":"sub","ch":"a","since":5,"epoch":7}`, "", `"epoch" must be a string`},
	} {
		r, err := ParseRequest([]byte(tc.in))
		if tc.reason != "" {
			var re *RequestError
			if !errors.As(err, &re) || re.Code != CodeBadRequest || !strings.Contains(re.Reason, tc.reason) {
				t.Errorf("ParseRequest(%s) = %+v, %v; want 400 ~%q", tc.in, r, err, tc.reason)
			}
			continue
		}
		if err != nil || r.Epoch != tc.epoch {
			t.Errorf("ParseRequest(%s) = %+v, %v; want epoch %q", tc.in, r, err, tc.epoch)
		}
	}
	for _, tc := range []struct {
		uri    string
		status int
		epoch  string
	}{
		{"/ws?ch=a&since=5&epoch=6752a3b10f4240", 0, "6752a3b10f4240"},
		{"/ws?ch=a&since=5&epoch=", 0, ""},
		{"/ws?ch=a&epoch=abc", 400, ""},
		{"/ws?ch=a&since=5&epoch=a%20b", 400, ""},
		{"/ws?ch=a&since=5&epoch=" + strings.Repeat("a", 33), 400, ""},
	} {
		u, status, err := parseURL(tc.uri, 4)
		if status != tc.status || (status == 0) != (err == nil) || u.epoch != tc.epoch && status == 0 {
			t.Errorf("parseURL(%q) = %+v, %d, %v; want %d epoch %q", tc.uri, u, status, err, tc.status, tc.epoch)
		}
	}
}

// FuzzParseURL: parseURL never panics; an accepted URL has valid
// channels, an epoch only with since and only a valid one, and a refusal
// carries a 4xx status and a reason.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"/ws", "/ws?ch=a,b&since=0", "/ws?ch=a&since=5&epoch=6752a3b10f4240",
		"/ws?ch=a&epoch=x", "/ws?ch=a&since=5&epoch=a%20b", "/ws?ch=%zz", "/ws?format=raw&ch=a", "/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		u, status, err := parseURL(uri, 4)
		if status != 0 {
			if status < 400 || status > 499 || err == nil || err.Error() == "" {
				t.Fatalf("parseURL(%q) = %d, %v", uri, status, err)
			}
			return
		}
		if err != nil || len(u.channels) > 4 {
			t.Fatalf("parseURL(%q) = %+v, %v", uri, u, err)
		}
		for _, ch := range u.channels {
			if ValidChannel(ch) != nil {
				t.Fatalf("parseURL(%q) accepted channel %q", uri, ch)
			}
		}
		if u.epoch != "" && (u.since == nil || !fanout.ValidEpoch(u.epoch)) {
			t.Fatalf("parseURL(%q) accepted epoch %q with since %v", uri, u.epoch, u.since)
		}
	})
}
