// Command gobwas is the gobwas/ws peer of bench -peers: net/http upgrades
// through github.com/gobwas/ws (ws.UpgradeHTTP), one goroutine per
// connection blocked in wsutil.ReadClientData (it only watches for the
// close), and a broadcast that compiles the frame once (ws.CompileFrame)
// and writes it to each subscriber from the publisher's goroutine, under
// the connection's write lock, with a write deadline.
package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/pushd/pushd/bench/peers/internal/peerkit"
	"github.com/pushd/pushd/bench/peers/internal/rooms"
)

// conn is one subscribed connection; mu serializes its writes.
type conn struct {
	mu sync.Mutex
	c  net.Conn
}

func (c *conn) write(frame []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.c.Write(frame)
	return err
}

func main() {
	rs := rooms.New[*conn]()
	peerkit.Main(peerkit.Peer{
		Name: "gobwas",
		ServeWS: func(ctx context.Context, ln net.Listener, log *slog.Logger) error {
			mux := http.NewServeMux()
			mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
				nc, _, _, err := ws.UpgradeHTTP(r, w)
				if err != nil {
					return
				}
				ch := r.URL.Query().Get("ch")
				c := &conn{c: nc}
				rs.Add(ch, c)
				defer nc.Close()
				defer rs.Remove(ch, c)
				for {
					if _, _, err := wsutil.ReadClientData(nc); err != nil {
						return
					}
				}
			})
			srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
			go func() { <-ctx.Done(); _ = srv.Close() }()
			return srv.Serve(ln)
		},
		Publish: func(ch string, payload []byte) int {
			frame, err := ws.CompileFrame(ws.NewTextFrame(payload))
			if err != nil {
				return 0
			}
			n := 0
			for _, c := range rs.Snapshot(nil, ch) {
				if c.write(frame) == nil {
					n++
				}
			}
			return n
		},
		Subscribed: rs.Len,
	})
}
