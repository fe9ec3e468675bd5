package codec

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

var utf8Cases = []struct {
	name string
	in   string
	// fail is the index of the first byte at which a byte-by-byte feed must
	// report failure, -1 when the input is a valid prefix, len(in) when it
	// is only incomplete.
	fail int
}{
	{name: "empty", in: "", fail: -1},
	{name: "ascii", in: "hello", fail: -1},
	{name: "2-byte", in: "\xc2\xa9", fail: -1},
	{name: "3-byte", in: "\xe2\x82\xac", fail: -1},
	{name: "4-byte", in: "\xf0\x9f\x98\x80", fail: -1},
	{name: "U+10FFFF", in: "\xf4\x8f\xbf\xbf", fail: -1},
	{name: "U+FFFE U+FFFF", in: "\xef\xbf\xbe\xef\xbf\xbf", fail: -1},
	{name: "U+D7FF", in: "\xed\x9f\xbf", fail: -1},
	{name: "U+E000", in: "\xee\x80\x80", fail: -1},
	{name: "lone continuation", in: "a\x80", fail: 1},
	{name: "C0 overlong", in: "\xc0\xaf", fail: 0},
	{name: "C1 overlong", in: "\xc1\xbf", fail: 0},
	{name: "E0 overlong", in: "\xe0\x9f\xbf", fail: 1},
	{name: "F0 overlong", in: "\xf0\x8f\xbf\xbf", fail: 1},
	{name: "surrogate D800", in: "\xed\xa0\x80", fail: 1},
	{name: "surrogate DFFF", in: "\xed\xbf\xbf", fail: 1},
	{name: "above U+10FFFF", in: "\xf4\x90\x80\x80", fail: 1},
	{name: "F5", in: "\xf5\x80\x80\x80", fail: 0},
	{name: "FF", in: "\xff", fail: 0},
	{name: "truncated then ascii", in: "\xe2\x82a", fail: 2},
	{name: "autobahn 6.4.1 prefix", in: "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80", fail: 12},
}

func TestUTF8FailFast(t *testing.T) {
	for _, tc := range utf8Cases {
		t.Run(tc.name, func(t *testing.T) {
			var u UTF8
			failed := -1
			for i := 0; i < len(tc.in); i++ {
				if !u.Write([]byte{tc.in[i]}) {
					failed = i
					break
				}
			}
			if failed != tc.fail {
				t.Fatalf(
					"byte-by-byte failure at %d, want %d",
					failed, tc.fail)
			}
			want := utf8.ValidString(tc.in)
			if tc.fail < 0 && u.Complete() != want {
				t.Fatalf(
					"Complete = %v, utf8.Valid = %v",
					u.Complete(), want)
			}
			if u.Valid() != (tc.fail < 0) {
				t.Fatalf(
					"Valid = %v after the input",
					u.Valid())
			}
		})
	}
}

// utf8Split checks every way to cut in into two and three pieces against
// utf8.Valid.
func utf8Split(t *testing.T, in []byte) {
	t.Helper()
	want := utf8.Valid(in)
	for i := 0; i <= len(in); i++ {
		for j := i; j <= len(in); j++ {
			var u UTF8
			ok := u.Write(in[:i]) && u.Write(in[i:j]) && u.Write(in[j:])
			if got := ok && u.Complete(); got != want {
				t.Fatalf(
					"split %d/%d of % x: %v, utf8.Valid = %v",
					i, j, in, got, want)
			}
		}
	}
}

func TestUTF8Splits(t *testing.T) {
	for _, tc := range utf8Cases {
		utf8Split(t, []byte(tc.in))
		utf8Split(t, []byte("abcdefghij"+tc.in+"klmnop\xe2\x82\xac"))
	}
}

func TestUTF8Exhaustive3Bytes(t *testing.T) {
	// Every 1-, 2- and 3-byte input, fed whole and byte by byte. 4-byte
	// sequences are covered by the fuzz target and the table.
	buf := make([]byte, 3)
	for a := 0; a < 256; a++ {
		for b := 0; b < 256; b++ {
			for c := -1; c < 256; c++ {
				in := buf[:2]
				buf[0], buf[1] = byte(a), byte(b)
				if c >= 0 {
					buf[2] = byte(c)
					in = buf[:3]
				}
				want := utf8.Valid(in)
				var whole, step UTF8
				if got := whole.Write(in) && whole.Complete(); got != want {
					t.Fatalf(
						"whole % x: %v, want %v",
						in, got, want)
				}
				ok := true
				for _, x := range in {
					ok = ok && step.Write([]byte{x})
				}
				if got := ok && step.Complete(); got != want {
					t.Fatalf(
						"stepped % x: %v, want %v",
						in, got, want)
				}
			}
		}
	}
}

func TestUTF8StickyAndReset(t *testing.T) {
	var u UTF8
	if u.Write([]byte{0xff}) || u.Write([]byte("a")) || u.Valid() {
		t.Fatal("rejection is not sticky")
	}
	u.Reset()
	if !u.Write([]byte("a")) || !u.Complete() {
		t.Fatal("Reset did not clear")
	}
}

func TestUTF8Allocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not exact under -race")
	}
	in := bytes.Repeat([]byte("héllo wörld € 😀 "), 20)
	var u UTF8
	allocs := testing.AllocsPerRun(100, func() {
		u.Reset()
		u.Write(in[:7])
		u.Write(in[7:])
	})
	if allocs != 0 || !u.Complete() {
		t.Fatalf(
			"UTF8.Write: %v allocs per run (complete=%v), want 0",
			allocs, u.Complete())
	}
}
