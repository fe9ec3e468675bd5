package cluster

import (
	"bytes"
	"errors"
	"testing"

	"github.com/pushd/pushd/fanout"
)

func TestDecodeEnvelope(t *testing.T) {
	tests := []struct {
		in      string
		epoch   string
		seq     uint64
		payload string
		ok      bool
	}{
		{"p1:1:hello", "", 1, "hello", true},
		{"p1:42:", "", 42, "", true},
		{"p1:7:p1:8:nested", "", 7, "p1:8:nested", true},
		{"p1:18446744073709551615:x", "", 1<<64 - 1, "x", true},
		{"p1:18446744073709551616:x", "", 0, "", false}, // overflow
		{"p1:0:x", "", 0, "", false},
		{"p1:01:x", "", 0, "", false},
		{"p1::x", "", 0, "", false},
		{"p1:5", "", 0, "", false},
		{"p1:5x:y", "", 0, "", false},
		{"p2:5:y", "5", 0, "", false}, // an epoch but no seq
		{"p2:6752a3b10f4240:3:hi", "6752a3b10f4240", 3, "hi", true},
		{"p2:e-_Z9:1:", "e-_Z9", 1, "", true},
		{"p2:ab:3:p2:cd:4:x", "ab", 3, "p2:cd:4:x", true},
		{"p2::3:x", "", 0, "", false},     // empty epoch
		{"p2:a b:3:x", "", 0, "", false},  // space in the epoch
		{"p2:a\"b:3:x", "", 0, "", false}, // quote in the epoch
		{"p2:abc", "", 0, "", false},      // no ':' after the epoch
		{"p2:abc:0:x", "", 0, "", false},  // seq 0
		{"p2:abc:7", "", 0, "", false},    // no ':' after the seq
		{"p2:" + string(bytes.Repeat([]byte("a"), fanout.MaxEpochLen+1)) + ":1:x", "", 0, "", false},
		{"p3:abc:1:x", "", 0, "", false},
		{"p1", "", 0, "", false},
		{"", "", 0, "", false},
		{"p1:000000000000000000000000001:x", "", 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			e, seq, p, err := DecodeEnvelope([]byte(tt.in))
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrEnvelope) {
					t.Fatalf("err %v is not ErrEnvelope", err)
				}
				return
			}
			if string(e) != tt.epoch || seq != tt.seq || string(p) != tt.payload {
				t.Fatalf("got (%q, %d, %q), want (%q, %d, %q)", e, seq, p, tt.epoch, tt.seq, tt.payload)
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

// FuzzEnvelope: DecodeEnvelope never panics, its epoch is valid or empty
// (version 1), its payload is a suffix of the input, and encode→decode
// round-trips; a decoded envelope re-encodes to the same bytes (the
// encoding is canonical). The fuzzer also splits the input into an epoch
// candidate.
func FuzzEnvelope(f *testing.F) {
	for _, s := range []string{"p1:1:hello", "p1:42:", "p1:0:x", "p1:01:x", "p1:18446744073709551615:x",
		"p1:18446744073709551616:x", "p1::", "p1:5", "", "p1:3:p1:4:x", "\xff\x00p1:9:",
		"p2:6752a3b10f4240:3:hi", "p2::1:x", "p2:a b:1:x", "p2:abc", "p2:ab:3:p2:cd:4:x"} {
		f.Add([]byte(s), uint64(7), 3)
	}
	f.Fuzz(func(t *testing.T, in []byte, seq uint64, cut int) {
		e, got, p, err := DecodeEnvelope(in)
		if err == nil {
			if got == 0 || len(p) > len(in) || !bytes.HasSuffix(in, p) || (len(e) > 0 && !fanout.ValidEpoch(string(e))) {
				t.Fatalf("decode(%q) = %q %d %q", in, e, got, p)
			}
			if re := AppendEnvelope(nil, string(e), got, p); !bytes.Equal(re, in) {
				t.Fatalf("re-encode %q != %q", re, in)
			}
		}
		if seq == 0 {
			return
		}
		// An epoch candidate from the input's prefix; only valid ones can
		// be encoded.
		epoch := ""
		if cut > 0 && cut <= len(in) && fanout.ValidEpoch(string(in[:cut])) {
			epoch = string(in[:cut])
		}
		enc := AppendEnvelope(nil, epoch, seq, in)
		e2, s2, p2, err := DecodeEnvelope(enc)
		if err != nil || string(e2) != epoch || s2 != seq || !bytes.Equal(p2, in) {
			t.Fatalf("round trip (%q, %d, %q): %q %d %q %v", epoch, seq, in, e2, s2, p2, err)
		}
	})
}
