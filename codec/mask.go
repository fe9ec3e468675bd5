package codec

import (
	"encoding/binary"
	"math/bits"
)

// Unmask XORs b in place with the masking key (RFC 6455 §5.3), starting at
// key byte offset (0..3; larger values are taken modulo 4), and returns the
// offset for the byte after b. Masking and unmasking are the same operation,
// so a payload split across reads is handled by passing the returned offset
// to the next call.
//
// Unmask never allocates. It works 8 bytes at a time in pure Go and, on
// amd64, 32 bytes at a time with AVX2 (SSE2 without it) for longer inputs;
// see mask_amd64.go.
func Unmask(b []byte, key [4]byte, offset int) int {
	next, _ := unmask(b, key, offset)
	return next
}

// unmask is Unmask that also reports whether any resulting byte has its high
// bit set: hi == 0 means the unmasked bytes are ASCII, which lets the parser
// skip UTF-8 validation of text without another pass over the payload.
func unmask(b []byte, key [4]byte, offset int) (next int, hi uint64) {
	offset &= 3
	next = (offset + len(b)) & 3
	// Rotate the key so that byte 0 of every little-endian word meets
	// key[offset]; words are then multiples of 4 bytes apart, so the same
	// rotated key serves them all, down to the last 1..3 bytes.
	k32 := bits.RotateLeft32(binary.LittleEndian.Uint32(key[:]), -8*offset)
	var acc uint64
	if len(b) >= vectorMin {
		b, acc = unmaskBlocks(b, k32)
	}
	// At most vectorMin-1 bytes left: whole words here, without a call.
	k := uint64(k32)<<32 | uint64(k32)
	for len(b) >= 8 {
		w := binary.LittleEndian.Uint64(b) ^ k
		binary.LittleEndian.PutUint64(b, w)
		acc |= w
		b = b[8:]
	}
	if len(b) >= 4 {
		w := binary.LittleEndian.Uint32(b) ^ k32
		binary.LittleEndian.PutUint32(b, w)
		acc |= uint64(w)
		b = b[4:]
	}
	for i := range b { // at most 3 bytes
		c := b[i] ^ byte(k32>>(8*(i&3)))
		b[i] = c
		acc |= uint64(c)
	}
	return next, acc & 0x8080808080808080
}

// unmaskGeneric XORs whole 8-byte words of b with k32 repeated (as a
// little-endian pattern aligned to b[0]) and returns the unprocessed tail
// (fewer than 8 bytes; it starts at a multiple of 4, so the key offset is
// unchanged) and the OR of all the words written.
//
// encoding/binary little-endian loads and stores compile to single MOVQs on
// amd64 and arm64; BenchmarkUnmaskGeneric compares them with unsafe loads.
func unmaskGeneric(b []byte, k32 uint32) ([]byte, uint64) {
	k := uint64(k32)<<32 | uint64(k32)
	var acc uint64
	for len(b) >= 32 {
		// Four independent words per step: no loop-carried dependency
		// except the accumulator, and the re-slice is the only bounds check.
		w := b[:32]
		w0 := binary.LittleEndian.Uint64(w[0:]) ^ k
		w1 := binary.LittleEndian.Uint64(w[8:]) ^ k
		w2 := binary.LittleEndian.Uint64(w[16:]) ^ k
		w3 := binary.LittleEndian.Uint64(w[24:]) ^ k
		binary.LittleEndian.PutUint64(w[0:], w0)
		binary.LittleEndian.PutUint64(w[8:], w1)
		binary.LittleEndian.PutUint64(w[16:], w2)
		binary.LittleEndian.PutUint64(w[24:], w3)
		acc |= (w0 | w1) | (w2 | w3)
		b = b[32:]
	}
	for len(b) >= 8 {
		w := binary.LittleEndian.Uint64(b) ^ k
		binary.LittleEndian.PutUint64(b, w)
		acc |= w
		b = b[8:]
	}
	return b, acc
}
