package codec

import (
	"github.com/gobwas/ws"
)

// Precompiled control frames (server side: unmasked, FIN). They are string
// constants so that they are immutable; write them with
// append(buf, codec.FramePing...) or io.WriteString. RFC 6455 §5.5.
const (
	FramePing                = "\x89\x00"         // ping, empty payload
	FramePong                = "\x8a\x00"         // pong, empty payload
	FrameCloseNoStatus       = "\x88\x00"         // close without a status code
	FrameCloseNormal         = "\x88\x02\x03\xe8" // close 1000
	FrameCloseGoingAway      = "\x88\x02\x03\xe9" // close 1001 (server shutdown)
	FrameCloseProtocolError  = "\x88\x02\x03\xea" // close 1002
	FrameCloseInvalidData    = "\x88\x02\x03\xef" // close 1007
	FrameClosePolicy         = "\x88\x02\x03\xf0" // close 1008
	FrameCloseTooBig         = "\x88\x02\x03\xf1" // close 1009
	FrameCloseInternalError  = "\x88\x02\x03\xf3" // close 1011
	FrameCloseServiceRestart = "\x88\x02\x03\xf4" // close 1012 (server restart)
	FrameCloseTryAgainLater  = "\x88\x02\x03\xf5" // close 1013 (overloaded)
)

// AppendFrame appends a complete unmasked frame (server side, RFC 6455 §5.2):
// header then payload. It allocates only when dst lacks capacity.
func AppendFrame(dst []byte, op ws.OpCode, fin bool, payload []byte) []byte {
	var hb [ws.MaxHeaderSize]byte
	n := WriteHeader(hb[:], ws.Header{Fin: fin, OpCode: op, Length: int64(len(payload))})
	dst = append(dst, hb[:n]...)
	return append(dst, payload...)
}

// AppendMaskedFrame appends a complete frame masked with key (client side,
// RFC 6455 §5.3), for test clients and load generators. payload is not
// modified; the masked copy is written to dst.
func AppendMaskedFrame(dst []byte, op ws.OpCode, fin bool, payload []byte, key [4]byte) []byte {
	var hb [ws.MaxHeaderSize]byte
	n := WriteHeader(hb[:], ws.Header{Fin: fin, OpCode: op, Masked: true, Mask: key, Length: int64(len(payload))})
	dst = append(dst, hb[:n]...)
	start := len(dst)
	dst = append(dst, payload...)
	Unmask(dst[start:], key, 0)
	return dst
}

// CompileFrame returns one complete unmasked FIN frame in a new slice of
// exactly its size, meant to be written unchanged to many sockets
// (broadcast: encode once). Treat the result as read-only.
func CompileFrame(op ws.OpCode, payload []byte) []byte {
	size := HeaderSize(ws.Header{Length: int64(len(payload))}) + len(payload)
	return AppendFrame(make([]byte, 0, size), op, true, payload)
}

// CompileCompressedFrame is CompileFrame for a payload already compressed
// with permessage-deflate (RFC 7692 §6): it sets RSV1 on the frame.
func CompileCompressedFrame(op ws.OpCode, compressed []byte) []byte {
	h := ws.Header{Fin: true, Rsv: rsv1, OpCode: op, Length: int64(len(compressed))}
	out := make([]byte, HeaderSize(h), HeaderSize(h)+len(compressed))
	WriteHeader(out, h)
	return append(out, compressed...)
}
