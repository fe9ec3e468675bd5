package codec

import (
	"errors"

	"github.com/gobwas/ws"
)

// Error is a protocol failure detected by codec. Code is the close status
// code the endpoint should send before failing the connection
// (RFC 6455 §7.4.1); Reason is a short text suitable for the close frame.
//
// All *Error values returned by this package are the sentinels below; compare
// them with errors.Is and read the code with CloseCode.
type Error struct {
	Code   ws.StatusCode
	Reason string
}

// Error implements error.
func (e *Error) Error() string { return "codec: " + e.Reason }

// Sentinel errors. The *Error values carry the close code to send: 1002
// (protocol error), 1007 (invalid payload data) or 1009 (message too big).
// ErrShortHeader is not a protocol failure: it only means "need more bytes".
var (
	// ErrShortHeader is returned by ParseHeader when b holds only part of a
	// frame header; NeedHeaderBytes(b) tells how many bytes the header needs.
	ErrShortHeader = errors.New("codec: short frame header")

	// ErrLengthMSB: a 64-bit payload length with the most significant bit
	// set (RFC 6455 §5.2).
	ErrLengthMSB = &Error{Code: ws.StatusProtocolError, Reason: "64-bit payload length has the most significant bit set"}
	// ErrReservedOpcode: opcodes 0x3-0x7 and 0xB-0xF (RFC 6455 §5.2).
	ErrReservedOpcode = &Error{Code: ws.StatusProtocolError, Reason: "reserved opcode"}
	// ErrRSV: RSV bits set without a negotiated extension, or RSV1 on a
	// control or continuation frame (RFC 6455 §5.2, RFC 7692 §6).
	ErrRSV = &Error{Code: ws.StatusProtocolError, Reason: "unexpected RSV bits"}
	// ErrControlTooBig: a control frame payload longer than 125 bytes
	// (RFC 6455 §5.5).
	ErrControlTooBig = &Error{Code: ws.StatusProtocolError, Reason: "control frame payload longer than 125 bytes"}
	// ErrControlFragmented: a control frame without FIN (RFC 6455 §5.5).
	ErrControlFragmented = &Error{Code: ws.StatusProtocolError, Reason: "fragmented control frame"}
	// ErrMaskRequired: an unmasked client-to-server frame (RFC 6455 §5.1).
	ErrMaskRequired = &Error{Code: ws.StatusProtocolError, Reason: "client frame is not masked"}
	// ErrMaskForbidden: a masked server-to-client frame (RFC 6455 §5.1).
	ErrMaskForbidden = &Error{Code: ws.StatusProtocolError, Reason: "server frame is masked"}
	// ErrContinuationWithoutStart: a continuation frame while no fragmented
	// message is in progress (RFC 6455 §5.4).
	ErrContinuationWithoutStart = &Error{Code: ws.StatusProtocolError, Reason: "continuation frame without a started message"}
	// ErrDataInsideFragmented: a text or binary frame while a fragmented
	// message is in progress (RFC 6455 §5.4).
	ErrDataInsideFragmented = &Error{Code: ws.StatusProtocolError, Reason: "new data frame inside a fragmented message"}
	// ErrFrameTooBig: a frame payload above Config.MaxFrameSize.
	ErrFrameTooBig = &Error{Code: ws.StatusMessageTooBig, Reason: "frame too big"}
	// ErrMessageTooBig: a message (sum of its fragments, or its
	// decompressed size) above the configured maximum.
	ErrMessageTooBig = &Error{Code: ws.StatusMessageTooBig, Reason: "message too big"}
	// ErrInvalidUTF8: a text message that is not valid UTF-8 (RFC 6455 §8.1).
	ErrInvalidUTF8 = &Error{Code: ws.StatusInvalidFramePayloadData, Reason: "invalid UTF-8 in text message"}
	// ErrCloseTooShort: a close payload of exactly one byte (RFC 6455 §5.5.1).
	ErrCloseTooShort = &Error{Code: ws.StatusProtocolError, Reason: "close payload of one byte"}
	// ErrCloseCode: a close status code that must not appear on the wire
	// (RFC 6455 §7.4.1, §7.4.2 and the IANA registry, §11.7).
	ErrCloseCode = &Error{Code: ws.StatusProtocolError, Reason: "invalid close status code"}
	// ErrCloseReasonUTF8: a close reason that is not valid UTF-8
	// (RFC 6455 §5.5.1).
	ErrCloseReasonUTF8 = &Error{Code: ws.StatusInvalidFramePayloadData, Reason: "invalid UTF-8 in close reason"}
	// ErrDeflateData: a compressed message that does not inflate
	// (RFC 7692 §7.2.2).
	ErrDeflateData = &Error{Code: ws.StatusInvalidFramePayloadData, Reason: "invalid compressed data"}

	// ErrNegotiation is wrapped by permessage-deflate negotiation failures:
	// the offer is malformed and the extension must be declined.
	ErrNegotiation = errors.New("codec: permessage-deflate negotiation failed")
)

// CloseCode returns the close code carried by the first *Error in err's
// chain, or 1011 (internal error) when there is none. CloseCode(nil) is 1000.
func CloseCode(err error) ws.StatusCode {
	if err == nil {
		return ws.StatusNormalClosure
	}
	// Fast path: codec returns its sentinels unwrapped.
	if e, ok := err.(*Error); ok {
		return e.Code
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ws.StatusInternalServerError
}
