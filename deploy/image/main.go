// Command image builds pushd's container image without a Docker daemon
// and writes it as a tarball that docker load and podman load read
// (go-containerregistry's tarball format: manifest.json, the OCI config
// and one gzip layer).
//
//	go -C deploy run ./image -o "$PWD/pushd.tar"          # pushd:latest for this machine's architecture
//	go -C deploy run ./image -o "$PWD/pushd.tar" -tag registry.example.com/pushd:v0.1.0 -arch arm64
//	docker load -i pushd.tar   # or: podman load -i pushd.tar; crane push pushd.tar <ref>
//
// go -C runs the command in deploy/, so a relative -o is relative to it.
//
// The image holds one layer on an empty base (no shell, no package
// manager): a static pushd (CGO_ENABLED=0, -trimpath, built from the
// repository this module sits in), /etc/passwd and /etc/group with the
// user nonroot (65532), its home, /tmp and the LICENSE. The config:
//
//	Entrypoint  /usr/local/bin/pushd
//	Cmd         -listen 0.0.0.0:8080 -admin-listen 0.0.0.0:9090
//	User        65532:65532 (nonroot)
//	Ports       8080/tcp (WebSocket, SSE), 9090/tcp (admin: /livez, /readyz, /metrics, POST /publish)
//	StopSignal  SIGTERM (starts pushd's drain)
//
// Because the admin port listens beyond loopback, pushd refuses to start
// without an admin key: run it with PUSHD_ADMIN_API_KEY set. /livez and
// /readyz answer without the key, for liveness and readiness probes.
// File times and the creation time are the Unix epoch, so the same
// binary gives the same image digest.
package main

import (
	"context"
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
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

// run is the whole command, testable.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	digest, err := build(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %s %s (linux/%s)\n", o.out, o.tag, digest, o.arch)
	return nil
}
