// Command pushd is the pushd WebSocket push server.
//
//	go run ./cmd/pushd            # serve ws://127.0.0.1:8080/ws, admin on 127.0.0.1:9090
//	go run ./cmd/pushd -echo      # conformance mode: echo every data message
//	go run ./cmd/pushd -h         # every flag; each is also PUSHD_<FLAG> in the environment
//	pushd -config /etc/pushd/pushd.yaml -check-config   # validate a config file (exit 0 or 2)
//	pushd -config /etc/pushd/pushd.yaml -print-config   # the effective config, secrets redacted
//	pushd -version                                      # version, VCS revision and Go version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		if !errors.Is(err, errFlagSyntax) { // the flag package printed those already
			fmt.Fprintln(os.Stderr, "pushd:", err)
		}
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "pushd:", err)
		os.Exit(1)
	}
}

// errUsage marks command-line and configuration errors (exit status 2).
var errUsage = errors.New("usage")

// errFlagSyntax marks command-line errors the flag package has already
// reported, with the usage text.
var errFlagSyntax = errors.New("bad command line")

// run is the whole program, testable: it parses args, serves until ctx is
// done, then drains and returns.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, os.LookupEnv, stderr)
	if err != nil {
		return err
	}
	if cfg.Version {
		return printVersion(stdout)
	}
	if cfg.PrintConfig {
		return printConfig(stdout, cfg)
	}
	if cfg.CheckConfig {
		fmt.Fprintln(stderr, "pushd: configuration ok")
		return nil
	}
	return serve(ctx, cfg, stderr)
}
