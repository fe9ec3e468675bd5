package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// rawWriteResult is the reply of the raw server's POST /write.
type rawWriteResult struct {
	Fds    int   `json:"fds"`
	Writes int   `json:"writes"`
	Errors int   `json:"errors"`
	Short  int   `json:"short"`
	LoopNs int64 `json:"loop_ns"` // duration of the write loop alone
}

// runRawServer runs the fan-out reference: the physical limit of pushing
// the same bytes to many sockets from one thread. It accepts TCP
// connections and never reads them; POST /write?repeat=k with the frame as
// the body writes the frame k times to every accepted socket, fd after fd,
// with one plain write(2) per frame (syscall.Write, a single goroutine
// locked to its thread, no buffering, no writev). It logs the same
// "listening" lines as pushd and serves GET /stats (conns), so the harness
// starts it like any server.
func runRawServer(ctx context.Context, args []string, stderr io.Writer) int {
	ln, aln, log, code := serverListeners("bench -rawserver", args, stderr)
	if ln == nil {
		return code
	}
	var (
		mu    sync.Mutex
		conns []net.Conn // kept so the sockets stay open
		fds   []int
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fd, err := connFd(c)
			if err != nil {
				log.Error("fd", "err", err)
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c)
			fds = append(fds, fd)
			mu.Unlock()
		}
	}()
	admin := http.NewServeMux()
	admin.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n := len(fds)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(serverStats{Conns: int64(n), Goroutines: runtime.NumGoroutine()})
	})
	admin.HandleFunc("POST /write", func(w http.ResponseWriter, r *http.Request) {
		repeat, err := strconv.Atoi(r.URL.Query().Get("repeat"))
		if err != nil || repeat < 1 {
			http.Error(w, "repeat must be a positive integer", http.StatusBadRequest)
			return
		}
		frame, err := io.ReadAll(r.Body)
		if err != nil || len(frame) == 0 {
			http.Error(w, "body: the frame to write", http.StatusBadRequest)
			return
		}
		mu.Lock()
		snapshot := append([]int(nil), fds...)
		mu.Unlock()
		res := rawWriteLoop(snapshot, frame, repeat)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(res)
	})
	adminSrv := &http.Server{Handler: admin, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- adminSrv.Serve(aln) }()
	log.Info("listening", "kind", "ws", "addr", ln.Addr().String())
	log.Info("listening", "kind", "admin", "addr", aln.Addr().String())
	select {
	case <-ctx.Done():
	case err := <-errc:
		log.Error("serve", "err", err)
	}
	_ = ln.Close()
	_ = adminSrv.Close()
	mu.Lock()
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()
	return 0
}

// rawWriteLoop writes frame repeat times to each fd with one write(2) per
// frame, on one locked thread. The sockets are non-blocking (Go's netpoll
// set them so); a frame of a few dozen bytes into an idle socket's empty
// send buffer never meets EAGAIN, which is counted as an error if it does.
func rawWriteLoop(fds []int, frame []byte, repeat int) rawWriteResult {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	res := rawWriteResult{Fds: len(fds)}
	start := time.Now()
	for _, fd := range fds {
		for range repeat {
			n, err := syscall.Write(fd, frame)
			res.Writes++
			switch {
			case err != nil:
				res.Errors++
			case n < len(frame):
				res.Short++
			}
		}
	}
	res.LoopNs = time.Since(start).Nanoseconds()
	return res
}

// connFd returns the descriptor of c without duplicating it. It stays
// valid while c is open.
func connFd(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%T has no SyscallConn", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("syscall conn: %w", err)
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, fmt.Errorf("raw control: %w", err)
	}
	return fd, nil
}
