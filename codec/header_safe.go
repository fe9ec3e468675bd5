//go:build purego || !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package codec

import (
	"encoding/binary"

	"github.com/gobwas/ws"
)

// setHeader stores a decoded header into *h. b0 and b1 are the first two
// header bytes, mask the masking key as a little-endian word. This is the
// portable twin of header_unsafe.go.
func setHeader(h *ws.Header, b0, b1 byte, mask uint32, length int64) {
	h.Fin = b0&bitFin != 0
	h.Rsv = (b0 >> 4) & 0x7
	h.OpCode = ws.OpCode(b0 & 0x0f)
	h.Masked = b1&bitMask != 0
	binary.LittleEndian.PutUint32(h.Mask[:], mask)
	h.Length = length
}
