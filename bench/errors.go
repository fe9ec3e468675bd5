package main

import (
	"errors"
	"strconv"
)

// Sentinel errors of bench.
var (
	// ErrExited means a child process exited before it was asked to.
	ErrExited = errors.New("bench: child process exited")
	// ErrTimeout means a wait on a child process or server ran out of time.
	ErrTimeout = errors.New("bench: timed out")
	// ErrUsage means bad flags or arguments.
	ErrUsage = errors.New("bench: usage")
	// ErrStatus means the server answered the upgrade with a non-101 status.
	ErrStatus = errors.New("bench: upgrade refused")
	// ErrAccept means Sec-WebSocket-Accept did not match the key.
	ErrAccept = errors.New("bench: bad Sec-WebSocket-Accept")
	// ErrFrame means the server sent a frame bench does not expect.
	ErrFrame = errors.New("bench: unexpected frame")
	// errClosedByUs marks reads ended by the client's own Close.
	errClosedByUs = errors.New("bench: closed by client")
)

func itoa(n int) string { return strconv.Itoa(n) }
