package cluster

import (
	"bytes"
	"errors"
	"testing"
)

func TestDecodeEnvelope(t *testing.T) {
	tests := []struct {
		in      string
		seq     uint64
		payload string
		ok      bool
	}{
		{"p1:1:hello", 1, "hello", true},
		{"p1:42:", 42, "", true},
		{"p1:7:p1:8:nested", 7, "p1:8:nested", true},
		{"p1:18446744073709551615:x", 1<<64 - 1, "x", true},
		{"p1:18446744073709551616:x", 0, "", false}, // overflow
		{"p1:0:x", 0, "", false},
		{"p1:01:x", 0, "", false},
		{"p1::x", 0, "", false},
		{"p1:5", 0, "", false},
		{"p1:5x:y", 0, "", false},
		{"p2:5:y", 0, "", false},
		{"p1", 0, "", false},
		{"", 0, "", false},
		{"p1:000000000000000000000000001:x", 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			seq, p, err := DecodeEnvelope([]byte(tt.in))
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrEnvelope) {
					t.Fatalf("err %v is not ErrEnvelope", err)
				}
				return
			}
			if seq != tt.seq || string(p) != tt.payload {
				t.Fatalf("got (%d, %q), want (%d, %q)", seq, p, tt.seq, tt.payload)
			}
		})
	}
}

func TestParseName(t *testing.T) {
	tests := []struct {
		in      string
		ch      string
		durable bool
		ok      bool
	}{
		{"pushd:{room:1}", "room:1", false, true},
		{"pushd:{room:1}:d", "room:1", true, true},
		{"pushd:{a}:d}", "a}:d", false, true}, // raw channel of "a}:d"
		{"pushd:{a}b}:d", "a}b", true, true},
		{"pushd:{}", "", false, false},
		{"pushd:{}:d", "", false, false},
		{"pushd:canary:{x}", "", false, false},
		{"other", "", false, false},
	}
	for _, tt := range tests {
		ch, d, ok := parseName(tt.in)
		if ch != tt.ch || d != tt.durable || ok != tt.ok {
			t.Errorf("parseName(%q) = %q %v %v, want %q %v %v", tt.in, ch, d, ok, tt.ch, tt.durable, tt.ok)
		}
	}
	// Names built for any channel parse back to it, raw and durable apart.
	for _, ch := range []string{"x", "room:1", "a}:d", "}", "}:d", "{", "a{b}c"} {
		if c, d, ok := parseName(rawName(ch)); !ok || d || c != ch {
			t.Errorf("raw %q parsed as %q %v %v", ch, c, d, ok)
		}
		if c, d, ok := parseName(durableName(ch)); !ok || !d || c != ch {
			t.Errorf("durable %q parsed as %q %v %v", ch, c, d, ok)
		}
	}
}

// FuzzEnvelope: DecodeEnvelope never panics, its payload is a suffix of
// the input, and encode→decode round-trips; a decoded envelope re-encodes
// to the same bytes (the encoding is canonical).
func FuzzEnvelope(f *testing.F) {
	for _, s := range []string{"p1:1:hello", "p1:42:", "p1:0:x", "p1:01:x", "p1:18446744073709551615:x",
		"p1:18446744073709551616:x", "p1::", "p1:5", "", "p1:3:p1:4:x", "\xff\x00p1:9:"} {
		f.Add([]byte(s), uint64(7))
	}
	f.Fuzz(func(t *testing.T, in []byte, seq uint64) {
		got, p, err := DecodeEnvelope(in)
		if err == nil {
			if got == 0 || len(p) > len(in) || !bytes.HasSuffix(in, p) {
				t.Fatalf("decode(%q) = %d %q", in, got, p)
			}
			if re := AppendEnvelope(nil, got, p); !bytes.Equal(re, in) {
				t.Fatalf("re-encode %q != %q", re, in)
			}
		}
		if seq == 0 {
			return
		}
		enc := AppendEnvelope(nil, seq, in)
		s2, p2, err := DecodeEnvelope(enc)
		if err != nil || s2 != seq || !bytes.Equal(p2, in) {
			t.Fatalf("round trip (%d, %q): %d %q %v", seq, in, s2, p2, err)
		}
	})
}
