// Command nbio is the lesismal/nbio peer of bench -peers: an nbhttp.Engine
// (its own epoll event loops, one per CPU, no goroutine per connection)
// serving the upgrade through nbio's websocket.Upgrader, and a broadcast
// that calls Conn.WriteMessage for each subscriber from the publisher's
// goroutine (nbio queues what the socket does not take at once and flushes
// it from its loops). The upgrader's read deadline (KeepaliveTime) is set
// to the 10 minutes pushd's ping interval gets in the same run.
package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"

	"github.com/pushd/pushd/bench/peers/internal/peerkit"
	"github.com/pushd/pushd/bench/peers/internal/rooms"
)

func main() {
	rs := rooms.New[*websocket.Conn]()
	peerkit.Main(peerkit.Peer{
		Name: "nbio",
		ServeWS: func(ctx context.Context, ln net.Listener, log *slog.Logger) error {
			up := websocket.NewUpgrader()
			up.KeepaliveTime = 10 * time.Minute
			up.CheckOrigin = func(*http.Request) bool { return true }
			up.OnClose(func(c *websocket.Conn, err error) {
				if ch, ok := c.Session().(string); ok {
					rs.Remove(ch, c)
				}
			})
			mux := http.NewServeMux()
			mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
				c, err := up.Upgrade(w, r, nil)
				if err != nil {
					return
				}
				ch := r.URL.Query().Get("ch")
				c.SetSession(ch)
				rs.Add(ch, c)
			})
			engine := nbhttp.NewEngine(nbhttp.Config{
				Network: "tcp",
				Addrs:   []string{ln.Addr().String()},
				// Serve on the listener peerkit opened (its port is the one
				// logged).
				Listen:  func(string, string) (net.Listener, error) { return ln, nil },
				Handler: mux,
			})
			if err := engine.Start(); err != nil {
				return err
			}
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return engine.Shutdown(sctx)
		},
		Publish: func(ch string, payload []byte) int {
			n := 0
			for _, c := range rs.Snapshot(nil, ch) {
				if c.WriteMessage(websocket.TextMessage, payload) == nil {
					n++
				}
			}
			return n
		},
		Subscribed: rs.Len,
	})
}
