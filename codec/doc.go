// Package codec is pushd's RFC 6455 frame codec: pure functions and small
// state machines over []byte, built on github.com/gobwas/ws types
// (ws.Header, ws.OpCode, ws.StatusCode).
//
// It owns frame header parsing and encoding, payload (un)masking, close
// payloads, incremental UTF-8 validation across fragments, and the
// permessage-deflate (RFC 7692) helpers. It never does I/O, never starts
// goroutines, never logs and holds no mutable package state.
//
// The full file map and zero-allocation promise are documented below.
package codec
