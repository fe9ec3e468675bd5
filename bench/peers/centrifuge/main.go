// Command centrifuge is the centrifugal/centrifuge peer of bench -peers:
// a centrifuge.Node with its in-memory broker and its WebSocket handler
// (JSON protocol), configured for the job: the client sends the protocol's
// connect command ({"id":1,"connect":{}}) right after the upgrade and is
// subscribed on the server side to the channel named by ?ch= (the
// OnConnecting reply's Subscriptions); POST /publish?ch= calls
// Node.Publish. Application pings are off (-1), as pushd's are pushed past
// the run (-ping-interval 10m). A publication reaches the client as the
// protocol's push, {"push":{"channel":..,"pub":{"data":<payload>}}}, so
// payloads must be JSON (bench publishes a JSON string).
package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/centrifugal/centrifuge"

	"github.com/pushd/pushd/bench/peers/internal/peerkit"
)

// chKey carries ?ch= from the upgrade request to OnConnecting.
type chKey struct{}

func main() {
	var subscribed atomic.Int64
	node, err := centrifuge.New(centrifuge.Config{})
	if err != nil {
		panic(err) // a bad static Config: a programming error
	}
	node.OnConnecting(func(ctx context.Context, e centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		ch, _ := ctx.Value(chKey{}).(string)
		return centrifuge.ConnectReply{
			Credentials:   &centrifuge.Credentials{UserID: ""},
			Subscriptions: map[string]centrifuge.SubscribeOptions{ch: {}},
		}, nil
	})
	node.OnConnect(func(c *centrifuge.Client) {
		subscribed.Add(1)
		c.OnDisconnect(func(centrifuge.DisconnectEvent) { subscribed.Add(-1) })
	})
	peerkit.Main(peerkit.Peer{
		Name: "centrifuge",
		ServeWS: func(ctx context.Context, ln net.Listener, log *slog.Logger) error {
			if err := node.Run(); err != nil {
				return err
			}
			ws := centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{
				CheckOrigin:    func(*http.Request) bool { return true },
				PingPongConfig: centrifuge.PingPongConfig{PingInterval: -1, PongTimeout: -1},
			})
			mux := http.NewServeMux()
			mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
				ws.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), chKey{}, r.URL.Query().Get("ch"))))
			})
			srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-ctx.Done()
				_ = srv.Close()
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = node.Shutdown(sctx)
			}()
			return srv.Serve(ln)
		},
		Publish: func(ch string, payload []byte) int {
			if _, err := node.Publish(ch, payload); err != nil {
				return 0
			}
			return node.Hub().NumSubscribers(ch)
		},
		Subscribed: subscribed.Load,
	})
}
