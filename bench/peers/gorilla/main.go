// Command gorilla is the gorilla/websocket peer of bench -peers: net/http
// plus github.com/gorilla/websocket in the shape of gorilla's chat example,
// the usual goroutine-per-connection hub. One hub goroutine owns the
// channel → clients map (register, unregister and broadcast arrive on
// channels); each connection has a read goroutine (the HTTP handler, which
// only watches for the close) and a write goroutine draining a 256-message
// send queue. A client whose queue is full is dropped, as in the example.
// Unlike the example, each message is its own frame (the example joins
// queued messages with newlines), so every peer sends the same bytes.
package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pushd/pushd/bench/peers/internal/peerkit"
)

// client is one subscribed connection.
type client struct {
	ch   string
	conn *websocket.Conn
	send chan []byte
}

// broadcast is one publication; done receives the count handed over.
type broadcast struct {
	ch      string
	payload []byte
	done    chan int
}

// hub owns the subscriptions; only its run goroutine touches rooms.
type hub struct {
	register   chan *client
	unregister chan *client
	publish    chan broadcast
	rooms      map[string]map[*client]struct{}
	subscribed atomic.Int64
}

func (h *hub) run(ctx context.Context) {
	for {
		select {
		case c := <-h.register:
			room := h.rooms[c.ch]
			if room == nil {
				room = map[*client]struct{}{}
				h.rooms[c.ch] = room
			}
			room[c] = struct{}{}
			h.subscribed.Add(1)
		case c := <-h.unregister:
			h.remove(c)
		case b := <-h.publish:
			n := 0
			for c := range h.rooms[b.ch] {
				select {
				case c.send <- b.payload:
					n++
				default:
					h.remove(c)
				}
			}
			b.done <- n
		case <-ctx.Done():
			return
		}
	}
}

// remove unsubscribes c and closes its queue (its writer then closes the
// connection). Only the run goroutine calls it.
func (h *hub) remove(c *client) {
	room := h.rooms[c.ch]
	if _, ok := room[c]; !ok {
		return
	}
	delete(room, c)
	if len(room) == 0 {
		delete(h.rooms, c.ch)
	}
	close(c.send)
	h.subscribed.Add(-1)
}

func (c *client) writePump() {
	defer c.conn.Close()
	for msg := range c.send {
		_ = c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := c.conn.WriteMessage(websocket.TextMessage, msg); err != nil {
			return
		}
	}
	_ = c.conn.WriteMessage(websocket.CloseMessage, []byte{})
}

func main() {
	h := &hub{register: make(chan *client), unregister: make(chan *client), publish: make(chan broadcast),
		rooms: map[string]map[*client]struct{}{}}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	peerkit.Main(peerkit.Peer{
		Name: "gorilla",
		ServeWS: func(ctx context.Context, ln net.Listener, log *slog.Logger) error {
			go h.run(ctx)
			mux := http.NewServeMux()
			mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
				conn, err := up.Upgrade(w, r, nil)
				if err != nil {
					return
				}
				c := &client{ch: r.URL.Query().Get("ch"), conn: conn, send: make(chan []byte, 256)}
				select {
				case h.register <- c:
				case <-ctx.Done():
					conn.Close()
					return
				}
				go c.writePump()
				for {
					if _, _, err := conn.NextReader(); err != nil {
						break
					}
				}
				select {
				case h.unregister <- c:
				case <-ctx.Done():
				}
			})
			srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
			go func() { <-ctx.Done(); _ = srv.Close() }()
			return srv.Serve(ln)
		},
		Publish: func(ch string, payload []byte) int {
			done := make(chan int, 1)
			h.publish <- broadcast{ch: ch, payload: payload, done: done}
			return <-done
		},
		Subscribed: h.subscribed.Load,
	})
}
