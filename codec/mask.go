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
// Unmask never allocates. It works a machine word (or a vector register, see
// mask_amd64.go) at a time.
func Unmask(b []byte, key [4]byte, offset int) int {
	offset &= 3
	next := (offset + len(b)) & 3
	if len(b) >= 8 {
		// Rotate the key so that byte 0 of every little-endian word meets
		// key[offset]; words are then multiples of 4 bytes apart, so the
		// same rotated key serves them all.
		k32 := bits.RotateLeft32(binary.LittleEndian.Uint32(key[:]), -8*offset)
		b = unmaskWords(b, k32)
	}
	for i := range b {
		b[i] ^= key[(offset+i)&3]
	}
	return next
}

// unmaskGeneric XORs whole 8-byte words of b with k32 repeated (as a
// little-endian pattern aligned to b[0]) and returns the unprocessed tail
// (fewer than 8 bytes, which starts at a multiple of 4 so the key offset is
// unchanged).
func unmaskGeneric(b []byte, k32 uint32) []byte {
	k := uint64(k32)<<32 | uint64(k32)
	for len(b) >= 32 {
		// Four independent words per step: no loop-carried dependency, and
		// the re-slice below is the only bounds check.
		w := b[:32]
		binary.LittleEndian.PutUint64(w[0:], binary.LittleEndian.Uint64(w[0:])^k)
		binary.LittleEndian.PutUint64(w[8:], binary.LittleEndian.Uint64(w[8:])^k)
		binary.LittleEndian.PutUint64(w[16:], binary.LittleEndian.Uint64(w[16:])^k)
		binary.LittleEndian.PutUint64(w[24:], binary.LittleEndian.Uint64(w[24:])^k)
		b = b[32:]
	}
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k)
		b = b[8:]
	}
	return b
}
