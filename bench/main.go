package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches to the internal modes or to a scenario and returns the exit
// status: 0 success, 1 a failed invariant or error, 2 bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "-client", "--client":
			return runClient(ctx, args[1:], stdout, stderr)
		case "-refserver", "--refserver":
			return runRefServer(ctx, args[1:], stderr)
		case "-rawserver", "--rawserver":
			return runRawServer(ctx, args[1:], stderr)
		}
	}
	// go -C bench run . [flags] -peers all|<list> [peers flags] is the peers
	// scenario with -only.
	if i := slices.IndexFunc(args, func(a string) bool { return a == "-peers" || a == "--peers" }); i >= 0 {
		if i+1 >= len(args) {
			fmt.Fprintln(stderr, "bench: -peers needs all or a list of servers")
			return 2
		}
		args = slices.Concat(args[:i], []string{"peers", "-only", args[i+1]}, args[i+2:])
	}
	code, err := runScenarios(ctx, args, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
	}
	return code
}
