package main

import "errors"

// Sentinel errors; wrapped with context, matched with errors.Is.
var (
	// ErrUsage means the flags are wrong (exit code 2).
	ErrUsage = errors.New("loadtest: usage")
	// ErrPreflight means the host cannot hold the requested run (exit code 2);
	// the fixes were printed.
	ErrPreflight = errors.New("loadtest: preflight failed")
	// ErrInterrupted means SIGINT/SIGTERM stopped the run (partial report).
	ErrInterrupted = errors.New("loadtest: interrupted")
	// ErrNoConns means no connection was open when the window began.
	ErrNoConns = errors.New("loadtest: no connection was held (see errors)")
	// ErrChild means a worker process failed or broke the child protocol.
	ErrChild = errors.New("loadtest: worker process failed")

	errEOF = errors.New("loadtest: eof")
	errTLS = errors.New("loadtest: tls record error")
)

// Exit codes of the command.
const (
	ExitOK        = 0 // the run completed and every SLO held
	ExitRunError  = 1 // the run failed or was interrupted (a partial report is still printed)
	ExitUsage     = 2 // bad flags, or preflight found the host cannot hold the run
	ExitSLOBreach = 3 // the run completed (or was interrupted) and an SLO was breached
)
