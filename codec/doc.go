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
//	need.go          Parser.Need: bytes needed next, for SO_RCVLOWAT
//	utf8.go          §8.1 incremental UTF-8 (RFC 3629), fail-fast
//	utf8_amd64.*     whole-buffer validation with AVX2 (Keiser-Lemire
//	                 lookup); utf8_generic.go: unicode/utf8.Valid
//	close.go         §5.5.1 close payloads, §7.4 status codes
//	frame.go         §5.2 + §5.7 frame building, precompiled control frames
//	deflate.go       RFC 7692 §7.1 negotiation, §7.2.1 compression, §7.2.2
//	                 decompression with an output limit
//	errors.go        §7.4.1 close codes carried by *Error
//
// # Tests
//
//	go test ./codec/...                      table, split, oracle, alloc, interop tests
//	go test -race -shuffle=on ./codec/...    (alloc tests skip under -race)
//	go test -tags purego ./codec/...         pure-Go unmask, UTF-8 and header paths
//	go test ./codec -run='^$' -fuzz='^FuzzParseSplit$' -fuzztime=60s -fuzzminimizetime=10s
//	    (also FuzzParseHeader, FuzzUnmaskChunks, FuzzUTF8, FuzzParseClose,
//	    FuzzRoundTrip; one at a time)
//	go test ./codec -run='^$' -bench=. -count=5
//
// interop_test.go runs gorilla/websocket and coder/websocket clients against
// a loopback echo server framed by this package, with and without
// permessage-deflate.
//
// # Measured (benchmarks in this package; medians of 5 runs in one
// invocation on this 2-core AMD EPYC, shared with other work)
//
//	BenchmarkUnmask vs BenchmarkCopy vs BenchmarkGobwasCipher:
//	  size=16: 4.4 ns = 0.51x copy, 4.4x gobwas   size=125: 10.9 ns = 0.27x copy, 1.7x gobwas
//	  size=512: 10.1 ns = 0.61x copy, 2.3x gobwas size=4096: 40.8 ns = 0.90x copy, 1.5x gobwas
//	  size=65536: 639 ns = 1.8x copy, 1.4x gobwas (copy moves two 64 KiB buffers through L2)
//	The pinned gobwas/ws.Cipher is itself AVX2 (cipher_amd64.s), and at 4 KiB
//	both are bound by L1 store bandwidth: copy() takes 36.6 ns, so 2x gobwas
//	(30 ns) would be faster than memmove; an AVX-512 kernel measured the same
//	37 ns. Pure Go (-tags purego): 4 KiB in ~195 ns, 1.2x gobwas's pure-Go
//	loop; encoding/binary and unsafe word loads measure the same
//	(BenchmarkUnmaskGeneric), so mask.go uses encoding/binary.
//
//	BenchmarkParseStream, 1,000 masked 64-byte text frames, 0 allocs/op:
//	  text=ascii: 31.7 us, 2.2x gobwas ReadHeader (1.8x ReadHeaderBuffer)
//	  text=utf8:  44.0 us, 2.7x gobwas ReadHeader (2.6x ReadHeaderBuffer)
//	BenchmarkUTF8 (4 KiB): ASCII on par with unicode/utf8.Valid (73 vs
//	84 ns); mixed non-ASCII text about 10x faster (413 ns vs 4.0 us, AVX2).
package codec
