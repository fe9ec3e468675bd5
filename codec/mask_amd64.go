//go:build !purego

package codec

import "golang.org/x/sys/cpu"

// vectorMin is the input size from which the assembly kernels are used;
// below it the call overhead outweighs the wider steps (BenchmarkUnmask,
// size=16 and size=125, with and without -tags purego).
const vectorMin = 64

// unmaskBlocks XORs the whole 32-byte blocks of b with k32 repeated and
// returns the rest (fewer than 32 bytes) and the OR of the bytes it wrote,
// folded to 0x80 or 0. The kernel is chosen at run time: AVX2 when the CPU
// and OS support it (golang.org/x/sys/cpu checks both), SSE2 otherwise (part
// of the amd64 baseline). Build with -tags purego to use only pure Go.
func unmaskBlocks(b []byte, k32 uint32) ([]byte, uint64) {
	n := len(b) &^ 31
	var m uint32
	if cpu.X86.HasAVX2 {
		m = xorBlocksAVX2(b[:n], k32)
	} else {
		m = xorBlocksSSE2(b[:n], k32)
	}
	var hi uint64
	if m != 0 {
		hi = 0x80
	}
	return b[n:], hi
}

// xorBlocksAVX2 XORs p (len a multiple of 32) with k32 broadcast to every
// 32-bit lane and returns the VPMOVMSKB of the OR of the results: non-zero
// iff some byte written has its high bit set.
//
//go:noescape
func xorBlocksAVX2(p []byte, k32 uint32) uint32

// xorBlocksSSE2 is xorBlocksAVX2 with 16-byte registers.
//
//go:noescape
func xorBlocksSSE2(p []byte, k32 uint32) uint32
