package codec

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// naiveUnmask is the byte-loop oracle: RFC 6455 §5.3 literally.
func naiveUnmask(b []byte, key [4]byte, offset int) int {
	for i := range b {
		b[i] ^= key[(offset+i)%4]
	}
	return (offset + len(b)) % 4
}

func TestUnmaskOracle(t *testing.T) {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	src := make([]byte, 300+64)
	for i := range src {
		src[i] = byte(i*7 + 3)
	}
	for off := 0; off < 4; off++ {
		for n := 0; n <= 300; n++ {
			// Vary the alignment of the slice start as well.
			for start := 0; start < 8; start += 3 {
				got := bytes.Clone(src[start : start+n])
				want := bytes.Clone(got)
				gotOff := Unmask(got, key, off)
				wantOff := naiveUnmask(want, key, off)
				if gotOff != wantOff || !bytes.Equal(got, want) {
					t.Fatalf(
						"offset=%d len=%d start=%d: next=%d want %d, equal=%v",
						off, n, start, gotOff, wantOff, bytes.Equal(got, want))
				}
			}
		}
	}
}

func TestUnmaskLeavesNeighboursAlone(t *testing.T) {
	key := [4]byte{0xff, 0xff, 0xff, 0xff}
	for n := 0; n <= 130; n++ {
		buf := make([]byte, n+32)
		Unmask(buf[16:16+n], key, 1)
		for i, c := range buf {
			inside := i >= 16 && i < 16+n
			if inside != (c == 0xff) {
				t.Fatalf(
					"len=%d: byte %d = %#x",
					n, i, c)
			}
		}
	}
}

func TestUnmaskRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		n := r.IntN(70000)
		if r.IntN(2) == 0 {
			n = r.IntN(600)
		}
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		key := [4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}
		off := r.IntN(8) // offsets >= 4 are taken modulo 4
		want := bytes.Clone(buf)
		wantOff := naiveUnmask(want, key, off)
		// Unmask in random chunks with the running offset.
		got := buf
		o := off
		for rest := got; len(rest) > 0; {
			k := 1 + r.IntN(len(rest))
			o = Unmask(rest[:k], key, o)
			rest = rest[k:]
		}
		if len(buf) == 0 {
			o = Unmask(buf, key, off)
		}
		if !bytes.Equal(got, want) || o != wantOff {
			t.Fatalf(
				"len=%d off=%d: chunked unmask differs (next %d, want %d)",
				n, off, o, wantOff)
		}
	}
}

func TestUnmaskAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not exact under -race")
	}
	buf := make([]byte, 4096+3)
	key := [4]byte{1, 2, 3, 4}
	allocs := testing.AllocsPerRun(100, func() {
		o := Unmask(buf[:1001], key, 3)
		Unmask(buf[1001:], key, o)
	})
	if allocs != 0 {
		t.Fatalf(
			"Unmask: %v allocs per run, want 0",
			allocs)
	}
}

func TestUnmaskHighBitFlag(t *testing.T) {
	key := [4]byte{0x11, 0x22, 0x33, 0x44}
	for n := 0; n <= 300; n++ {
		for off := 0; off < 4; off++ {
			for _, hiAt := range []int{-1, 0, n / 3, n - 1} {
				buf := make([]byte, n)
				for i := range buf {
					buf[i] = byte('a'+i%26) ^ key[(off+i)%4]
				}
				if hiAt >= 0 && hiAt < n {
					buf[hiAt] ^= 0x80
				}
				_, hi := unmask(buf, key, off)
				ascii := true
				for _, c := range buf {
					ascii = ascii && c < 0x80
				}
				if (hi == 0) != ascii {
					t.Fatalf(
						"n=%d off=%d hiAt=%d: hi=%#x, ascii=%v",
						n, off, hiAt, hi, ascii)
				}
			}
		}
	}
}
