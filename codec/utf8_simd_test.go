package codec

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"unicode/utf8"
)

// TestValidUTF8Positions puts every 1-, 2- and 3-byte sequence, and a large
// sample of 4-byte ones, at positions around the 16-byte lane and 32-byte
// block boundaries of the vector validator, and at the very end of inputs
// (where a cut sequence must fail), and compares with unicode/utf8.Valid.
func TestValidUTF8Positions(t *testing.T) {
	if testing.Short() {
		t.Skip("exhaustive; skipped with -short")
	}
	// 160 bytes: sequences ending blocks 1-3 are followed by blocks that
	// the two-block ASCII shortcut skips.
	positions := []int{0, 13, 14, 15, 16, 29, 30, 31, 32, 45, 61, 62, 63, 93, 94, 95, 126, 127}
	if raceEnabled {
		// The race detector slows the loop 20x; the assembly it checks is
		// not instrumented anyway. Keep one position per boundary kind.
		positions = []int{15, 31, 63}
	}
	buf := make([]byte, 160)
	check := func(seq []byte) {
		for _, pos := range positions {
			for i := range buf {
				buf[i] = 'a'
			}
			copy(buf[pos:], seq)
			in := buf[:min(len(buf), pos+len(seq))]
			// Whole buffer, and the buffer ending right after seq.
			for _, p := range [][]byte{buf, in} {
				if got, want := validUTF8(p), utf8.Valid(p); got != want {
					t.Fatalf(
						"% x at %d (len %d): validUTF8=%v utf8.Valid=%v",
						seq, pos, len(p), got, want)
				}
			}
		}
	}
	seq := make([]byte, 4)
	for a := 0; a < 256; a++ {
		seq[0] = byte(a)
		check(seq[:1])
		for b := 0; b < 256; b++ {
			seq[1] = byte(b)
			check(seq[:2])
		}
	}
	interesting := []byte{0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff}
	for a := 0xc0; a < 256; a++ {
		seq[0] = byte(a)
		for b := 0x70; b < 0xc8; b++ {
			seq[1] = byte(b)
			for _, c := range interesting {
				seq[2] = c
				check(seq[:3])
				for _, d := range interesting {
					seq[3] = d
					check(seq[:4])
				}
			}
		}
	}
}

func TestValidUTF8Random(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	runes := []rune{'a', 'é', '€', '😀', 0x10ffff, 0xfffe, 0x7ff, 0x800, 0xffff, 0x10000, 0xd7ff, 0xe000}
	for range 20000 {
		var b []byte
		n := r.IntN(200)
		for len(b) < n {
			if r.IntN(50) == 0 {
				b = append(b, byte(r.Uint32()))
				continue
			}
			b = utf8.AppendRune(b, runes[r.IntN(len(runes))])
		}
		if r.IntN(10) == 0 && len(b) > 0 {
			b = b[:r.IntN(len(b))] // maybe cut a sequence
		}
		if got, want := validUTF8(b), utf8.Valid(b); got != want {
			t.Fatalf(
				"% x: validUTF8=%v utf8.Valid=%v",
				b, got, want)
		}
		var u UTF8
		c := r.IntN(len(b) + 1)
		if got, want := u.Write(b[:c]) && u.Write(b[c:]) && u.Complete(), utf8.Valid(b); got != want {
			t.Fatalf(
				"UTF8 split at %d of % x: %v, want %v",
				c, b, got, want)
		}
	}
	long := bytes.Repeat([]byte("héllo wörld € 😀 "), 100)
	if !validUTF8(long) || validUTF8(append(long, 0xe2)) || validUTF8(append(long[:len(long)-2], 'x')) {
		t.Fatal("long inputs")
	}
}
