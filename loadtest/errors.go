package main

import (
	"errors"
	"fmt"
	"io"
)

// Sentinel errors; wrapped with context, matched with errors.Is. They
// carry no "loadtest:" prefix: this is a command, and the one place that
// prints an error (printErr) adds the command's name once.
var (
	// ErrUsage means the flags are wrong (exit code 2).
	ErrUsage = errors.New("usage")
	// ErrPreflight means the host cannot hold the requested run (exit code 2);
	// the fixes were printed.
	ErrPreflight = errors.New("preflight failed")
	// ErrInterrupted means SIGINT/SIGTERM stopped the run (partial report).
	ErrInterrupted = errors.New("interrupted")
	// ErrNoConns means no connection was open when the window began.
	ErrNoConns = errors.New("no connection was held (see errors)")
	// ErrChild means a worker process failed or broke the child protocol.
	ErrChild = errors.New("worker process failed")

	errEOF = errors.New("eof")
	errTLS = errors.New("tls record error")
)

// printErr writes err to w as "loadtest: <err>".
func printErr(w io.Writer, err error) { fmt.Fprintln(w, "loadtest:", err) }

// Exit codes of the command.
const (
	ExitOK        = 0 // the run completed and every SLO held
	ExitRunError  = 1 // the run failed or was interrupted (a partial report is still printed)
	ExitUsage     = 2 // bad flags, or preflight found the host cannot hold the run
	ExitSLOBreach = 3 // the run completed (or was interrupted) and an SLO was breached
)
