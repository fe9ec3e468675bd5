package cluster

import (
	"errors"
	"testing"
)

func TestControlRoundTrip(t *testing.T) {
	for _, m := range []ControlMsg{
		{Op: ControlDisconnect, User: "u", Code: 4000, Reason: "banned", AfterMs: -1},
		{Op: ControlDisconnect, User: "u", Code: 1008, AfterMs: 500},
		{Op: ControlSubscribe, User: "u", Ch: "room:1", AfterMs: -1},
		{Op: ControlUnsubscribe, User: "u", Ch: "room:1", Reason: "moved", AfterMs: -1},
		{Op: ControlPresenceJoin, User: "u", Ch: "room:1", AfterMs: -1},
		{Op: ControlPresenceLeave, User: "u", Ch: "room:1", AfterMs: -1},
	} {
		b, err := EncodeControl(m)
		if err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		got, err := DecodeControl(b)
		m.V = ControlVersion
		if err != nil || got != m {
			t.Fatalf("round trip %+v: %+v %v", m, got, err)
		}
	}
}

func TestControlRejects(t *testing.T) {
	for _, in := range []string{
		``, `null`, `[]`, `{}`, `{"v":2,"op":"disconnect","user":"u","code":4000}`,
		`{"v":1,"op":"disconnect","user":"","code":4000}`,
		`{"v":1,"op":"disconnect","user":"u","code":1006}`,
		`{"v":1,"op":"disconnect","user":"u","code":5000}`,
		`{"v":1,"op":"subscribe","user":"u"}`,
		`{"v":1,"op":"presence_join","user":"u"}`,
		`{"v":1,"op":"explode","user":"u"}`,
		`{"v":"1"}`,
	} {
		if _, err := DecodeControl([]byte(in)); !errors.Is(err, ErrControl) {
			t.Errorf("%q: %v, want ErrControl", in, err)
		}
	}
}

// FuzzDecodeControl: never panics; whatever decodes re-encodes to
// something that decodes to the same message.
func FuzzDecodeControl(f *testing.F) {
	f.Add([]byte(`{"v":1,"op":"disconnect","user":"u","code":4000,"reason":"r","after_ms":5}`))
	f.Add([]byte(`{"v":1,"op":"subscribe","user":"u","ch":"room:1","after_ms":-1}`))
	f.Add([]byte(`{"v":1`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeControl(b)
		if err != nil {
			return
		}
		enc, err := EncodeControl(m)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", m, err)
		}
		again, err := DecodeControl(enc)
		if err != nil || again != m {
			t.Fatalf("%+v -> %s -> %+v %v", m, enc, again, err)
		}
	})
}
