//go:build !purego && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package codec

import (
	"unsafe"

	"github.com/gobwas/ws"
)

// setHeader stores a decoded header into *h. b0 and b1 are the first two
// header bytes, mask the masking key as a little-endian word.
//
// Why unsafe: the eight bytes Fin, Rsv, OpCode, Masked, Mask are written as
// one 64-bit store. Written field by field (header_safe.go), the next 16-byte
// copy of the header (Chunk.Header = p.hdr, then the caller's copy of the
// Chunk) cannot be forwarded from the store buffer and stalls: that stall was
// 20% of BenchmarkParseStream. TestHeaderLayout pins the field offsets this
// relies on; this file is built only on little-endian architectures, and
// -tags purego selects the safe twin.
func setHeader(h *ws.Header, b0, b1 byte, mask uint32, length int64) {
	w := uint64(b0>>7) | // Fin
		uint64((b0>>4)&0x7)<<8 | // Rsv
		uint64(b0&0x0f)<<16 | // OpCode
		uint64(b1>>7)<<24 | // Masked
		uint64(mask)<<32
	*(*uint64)(unsafe.Pointer(h)) = w
	h.Length = length
}
