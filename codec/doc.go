// Package codec is pushd's RFC 6455 WebSocket frame codec: pure functions
// and small state machines over []byte, built on the github.com/gobwas/ws
// types (ws.Header, ws.OpCode, ws.StatusCode).
//
// # What it owns
//
// Frame header parsing and encoding, payload (un)masking, validation of
// every RFC 6455 §5 framing rule, close payloads, incremental UTF-8
// validation across fragments, and the permessage-deflate (RFC 7692)
// helpers. The poller feeds Parser.Next whatever the socket delivered and
// gets back unmasked, validated payload chunks, or a protocol *Error that
// carries the close code to send (CloseCode).
//
// # What it must never do
//
// No I/O, no goroutines, no logging, no mutable package-level state, no
// panics on any input, and no allocation on the steady-state path.
//
// # Zero-allocation promise
//
// Parser.Next, ParseHeader, WriteHeader, Unmask, UTF8.Write, ParseClose
// and the Append* functions (given a dst with room) never allocate; tests
// assert it with testing.AllocsPerRun (skipped under -race). Compressor and
// Decompressor do not allocate once warm when dst has room. CompileFrame and
// CompileCompressedFrame allocate exactly one slice: the shared frame.
//
// # Concurrency
//
// Functions are safe for concurrent use. A Parser, UTF8, Compressor or
// Decompressor belongs to one goroutine at a time. A Config is read-only and
// may be shared by every Parser.
//
// # Files and the RFC sections they implement
//
//	header.go        §5.2 base framing: header parse (MSB check; non-minimal
//	                 lengths accepted, see ParseHeader) and minimal encoding
//	header_unsafe.go single-store header write (little-endian; safe twin in
//	                 header_safe.go, also selected by -tags purego)
//	parser.go        §5.1 masking direction, §5.2 RSV/opcodes, §5.4
//	                 fragmentation, §5.5 control frames, §5.6 + §8.1 UTF-8
//	                 of text, size limits (§10.4)
//	mask.go          §5.3 client-to-server masking, word-wide pure Go
//	mask_amd64.*     the same with AVX2/SSE2, chosen at run time via
//	                 golang.org/x/sys/cpu (-tags purego: mask_generic.go)
//	utf8.go          §8.1 incremental UTF-8 (RFC 3629), fail-fast
//	close.go         §5.5.1 close payloads, §7.4 status codes
//	frame.go         §5.2 + §5.7 frame building, precompiled control frames
//	deflate.go       RFC 7692 §7.1 negotiation, §7.2.1 compression, §7.2.2
//	                 decompression with an output limit
//	errors.go        §7.4.1 close codes carried by *Error
//
// # Measured (see the benchmarks; same run, this 2-core amd64 machine)
//
// Unmask at 4 KiB runs at about 0.8x the speed of copy() of the same size;
// gobwas/ws.Cipher (itself AVX2 in the pinned version) at about 0.6x.
// BenchmarkParseStream parses, unmasks and UTF-8 checks 1,000 masked 64-byte
// text frames about 2x faster than gobwas ws.ReadHeader + ws.Cipher over a
// bytes.Reader, with 0 allocations.
package codec
