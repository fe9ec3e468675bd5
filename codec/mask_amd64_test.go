//go:build !purego

package codec

import (
	"bytes"
	"fmt"
	"testing"

	"golang.org/x/sys/cpu"
)

// TestXorBlocksKernels checks both assembly kernels against unmaskGeneric,
// whichever one the CPU makes Unmask pick.
func TestXorBlocksKernels(t *testing.T) {
	kernels := map[string]func([]byte, uint32) uint32{
		"sse2": xorBlocksSSE2,
	}
	if cpu.X86.HasAVX2 {
		kernels["avx2"] = xorBlocksAVX2
	} else {
		t.Log("no AVX2 on this CPU: only the SSE2 kernel is tested")
	}
	for name, kernel := range kernels {
		for n := 0; n <= 1024; n += 32 {
			for _, hiAt := range []int{-1, 0, n/2 + 1, n - 1} {
				src := make([]byte, n+32)
				for i := range src {
					src[i] = byte(i*13) & 0x7f
				}
				k32 := uint32(0x1d2c3b4a)
				if hiAt >= 0 && hiAt < n {
					// After the XOR, this byte has its high bit set.
					src[hiAt] = 0x80 ^ byte(k32>>(8*(hiAt%4)))
				}
				got := bytes.Clone(src)
				want := bytes.Clone(src)
				m := kernel(got[:n], k32)
				_, acc := unmaskGeneric(want[:n], k32)
				if !bytes.Equal(got, want) {
					t.Fatalf(
						"%s n=%d: output differs from unmaskGeneric",
						name, n)
				}
				if (m != 0) != (acc&0x8080808080808080 != 0) {
					t.Fatalf(
						"%s n=%d hiAt=%d: high-bit mask %#x, generic %#x",
						name, n, hiAt, m, acc)
				}
			}
		}
	}
}

func BenchmarkXorBlocks(b *testing.B) {
	for _, n := range []int{64, 512, 4096} {
		buf := make([]byte, n)
		b.Run(fmt.Sprintf("kernel=sse2/size=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				xorBlocksSSE2(buf, 0x01020304)
			}
		})
		if cpu.X86.HasAVX2 {
			b.Run(fmt.Sprintf("kernel=avx2/size=%d", n), func(b *testing.B) {
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					xorBlocksAVX2(buf, 0x01020304)
				}
			})
		}
		b.Run(fmt.Sprintf("kernel=generic/size=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				unmaskGeneric(buf, 0x01020304)
			}
		})
	}
}
