package codec

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

func TestValidCloseCode(t *testing.T) {
	for c := 0; c <= 0xffff; c++ {
		code := ws.StatusCode(c)
		want := (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999)
		if ValidCloseCode(code) != want {
			t.Fatalf(
				"ValidCloseCode(%d) = %v, want %v",
				c, !want, want)
		}
	}
}

func TestParseClose(t *testing.T) {
	cases := []struct {
		name   string
		in     string
		code   ws.StatusCode
		reason string
		err    error
	}{
		{name: "empty", in: "", code: 1005},
		{name: "one byte", in: "\x03", err: ErrCloseTooShort},
		{name: "1000", in: "\x03\xe8", code: 1000},
		{name: "1000 with reason", in: "\x03\xe8bye", code: 1000, reason: "bye"},
		{name: "1003", in: "\x03\xeb", code: 1003},
		{name: "1004", in: "\x03\xec", code: 1004, err: ErrCloseCode},
		{name: "1005", in: "\x03\xed", code: 1005, err: ErrCloseCode},
		{name: "1006", in: "\x03\xee", code: 1006, err: ErrCloseCode},
		{name: "1007", in: "\x03\xef", code: 1007},
		{name: "1014", in: "\x03\xf6", code: 1014},
		{name: "1015", in: "\x03\xf7", code: 1015, err: ErrCloseCode},
		{name: "1016", in: "\x03\xf8", code: 1016, err: ErrCloseCode},
		{name: "0", in: "\x00\x00", code: 0, err: ErrCloseCode},
		{name: "999", in: "\x03\xe7", code: 999, err: ErrCloseCode},
		{name: "2999", in: "\x0b\xb7", code: 2999, err: ErrCloseCode},
		{name: "3000", in: "\x0b\xb8", code: 3000},
		{name: "4999", in: "\x13\x87", code: 4999},
		{name: "5000", in: "\x13\x88", code: 5000, err: ErrCloseCode},
		{name: "65535", in: "\xff\xff", code: 65535, err: ErrCloseCode},
		{name: "bad reason", in: "\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80", code: 1000, err: ErrCloseReasonUTF8},
		{name: "truncated reason", in: "\x03\xe8\xe2\x82", code: 1000, err: ErrCloseReasonUTF8},
		{name: "max reason", in: "\x03\xe8" + strings.Repeat("r", 123), code: 1000, reason: strings.Repeat("r", 123)},
		{name: "too long", in: "\x03\xe8" + strings.Repeat("r", 124), err: ErrControlTooBig},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, reason, err := ParseClose([]byte(tc.in))
			if err != tc.err || code != tc.code || string(reason) != tc.reason {
				t.Fatalf(
					"ParseClose(%q) = %d, %q, %v; want %d, %q, %v",
					tc.in, code, reason, err, tc.code, tc.reason, tc.err)
			}
			if err != nil && CloseCode(err) != tc.err.(*Error).Code {
				t.Fatalf(
					"CloseCode = %d",
					CloseCode(err))
			}
		})
	}
}

func TestAppendClose(t *testing.T) {
	long := strings.Repeat("€", 50) // 150 bytes, 3 per code point
	cases := []struct {
		name   string
		code   ws.StatusCode
		reason string
		want   string // reason after truncation
	}{
		{name: "no status", code: 1005, reason: "ignored"},
		{name: "zero", code: 0},
		{name: "normal", code: 1000, want: ""},
		{name: "reason", code: 4001, reason: "slow consumer", want: "slow consumer"},
		{name: "123 bytes kept", code: 1001, reason: strings.Repeat("a", 123), want: strings.Repeat("a", 123)},
		{name: "124 bytes cut", code: 1001, reason: strings.Repeat("a", 124), want: strings.Repeat("a", 123)},
		{name: "cut on a code point boundary", code: 1011, reason: long, want: strings.Repeat("€", 41)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			frame := AppendClose([]byte("prefix"), tc.code, tc.reason)
			if string(frame[:6]) != "prefix" {
				t.Fatal("dst prefix lost")
			}
			var p Parser
			p.Init(clientCfg)
			c, n, ok, err := p.Next(frame[6:])
			if err != nil || !ok || n != len(frame)-6 || c.MsgOp != ws.OpClose || !c.MsgEnd {
				t.Fatalf(
					"parse close frame % x: %+v %d %v %v",
					frame, c, n, ok, err)
			}
			code, reason, err := ParseClose(c.Payload)
			if err != nil {
				t.Fatal(err)
			}
			wantCode := tc.code
			if tc.code == 0 {
				wantCode = 1005
			}
			if code != wantCode || string(reason) != tc.want || !utf8.Valid(reason) {
				t.Fatalf(
					"got %d %q, want %d %q",
					code, reason, wantCode, tc.want)
			}
		})
	}
}

func TestPrecompiledFrames(t *testing.T) {
	cases := []struct {
		frame string
		want  []byte
	}{
		{FramePing, AppendFrame(nil, ws.OpPing, true, nil)},
		{FramePong, AppendFrame(nil, ws.OpPong, true, nil)},
		{FrameCloseNoStatus, AppendClose(nil, ws.StatusNoStatusRcvd, "")},
		{FrameCloseNormal, AppendClose(nil, 1000, "")},
		{FrameCloseGoingAway, AppendClose(nil, 1001, "")},
		{FrameCloseProtocolError, AppendClose(nil, 1002, "")},
		{FrameCloseInvalidData, AppendClose(nil, 1007, "")},
		{FrameClosePolicy, AppendClose(nil, 1008, "")},
		{FrameCloseTooBig, AppendClose(nil, 1009, "")},
		{FrameCloseInternalError, AppendClose(nil, 1011, "")},
		{FrameCloseServiceRestart, AppendClose(nil, 1012, "")},
		{FrameCloseTryAgainLater, AppendClose(nil, 1013, "")},
	}
	for _, tc := range cases {
		if tc.frame != string(tc.want) {
			t.Errorf(
				"precompiled % x, built % x",
				tc.frame, tc.want)
		}
	}
}

func TestCloseCode(t *testing.T) {
	if CloseCode(nil) != 1000 {
		t.Fatal("CloseCode(nil)")
	}
	if CloseCode(ErrMessageTooBig) != 1009 {
		t.Fatal("CloseCode(ErrMessageTooBig)")
	}
	wrapped := wrapErr{ErrInvalidUTF8}
	if CloseCode(wrapped) != 1007 {
		t.Fatal("CloseCode(wrapped)")
	}
	if CloseCode(ErrShortHeader) != 1011 {
		t.Fatal("CloseCode(non-protocol error)")
	}
}

type wrapErr struct{ err error }

func (w wrapErr) Error() string { return "wrapped: " + w.err.Error() }
func (w wrapErr) Unwrap() error { return w.err }

func TestParseCloseAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not exact under -race")
	}
	in := []byte("\x03\xe8going away: \xe2\x82\xac")
	var sink int
	allocs := testing.AllocsPerRun(100, func() {
		code, reason, _ := ParseClose(in)
		sink += int(code) + len(reason)
	})
	if allocs != 0 || sink == 0 {
		t.Fatalf(
			"ParseClose: %v allocs per run, want 0",
			allocs)
	}
}
