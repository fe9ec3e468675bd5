package codec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cws "github.com/coder/websocket"
	"github.com/gobwas/ws"
	gws "github.com/gorilla/websocket"
)

// Interop: independent client libraries (gorilla/websocket, coder/websocket)
// talk to a loopback echo server whose framing is done entirely by codec:
// Parser on the raw bytes read (in small reads, so frames split anywhere),
// Decompressor for their permessage-deflate messages, Compressor and
// AppendClose for the replies. The handshake is gobwas/ws with
// DeflateNegotiator. I/O lives only in this test: codec itself never does.

// echoStats counts what the echo server saw.
type echoStats struct {
	messages   atomic.Int64
	compressed atomic.Int64
	pings      atomic.Int64
	closeCode  atomic.Int64
}

// startEchoServer serves one connection on 127.0.0.1:0 and returns its
// address and a channel with the server's result.
func startEchoServer(t *testing.T, st *echoStats) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		defer ln.Close()
		conn, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		var neg DeflateNegotiator
		u := ws.Upgrader{Negotiate: neg.Negotiate}
		if _, err := u.Upgrade(conn); err != nil {
			done <- fmt.Errorf("upgrade: %w", err)
			return
		}
		done <- echo(conn, neg.Accepted(), st)
	}()
	return ln.Addr().String(), done
}

func echo(conn net.Conn, deflate bool, st *echoStats) error {
	var (
		p    Parser
		comp Compressor
		dec  Decompressor
		msg  []byte
		ctrl []byte
		buf  = make([]byte, 1000) // odd size: frames split anywhere
	)
	p.Init(&Config{Role: RoleServer, AllowRSV1: deflate, MaxMessageSize: 1 << 24})
	for {
		k, err := conn.Read(buf)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		b := buf[:k]
		for len(b) > 0 {
			c, n, ok, err := p.Next(b)
			if err != nil {
				conn.Write(AppendClose(nil, CloseCode(err), err.Error()))
				return err
			}
			b = b[n:]
			if !ok {
				break
			}
			if c.MsgOp.IsControl() {
				ctrl = append(ctrl, c.Payload...)
				if !c.FrameEnd {
					continue
				}
				switch c.MsgOp {
				case ws.OpPing:
					st.pings.Add(1)
					conn.Write(AppendFrame(nil, ws.OpPong, true, ctrl))
				case ws.OpClose:
					code, reason, err := ParseClose(ctrl)
					if err != nil {
						return err
					}
					st.closeCode.Store(int64(code))
					_, err = conn.Write(AppendClose(nil, code, string(reason)))
					return err
				}
				ctrl = ctrl[:0]
				continue
			}
			msg = append(msg, c.Payload...)
			if !c.MsgEnd {
				continue
			}
			payload := msg
			if c.Compressed {
				st.compressed.Add(1)
				payload, err = dec.Decompress(nil, msg, 1<<24)
				if err != nil {
					return err
				}
				if c.MsgOp == ws.OpText && !ValidUTF8(payload) {
					return ErrInvalidUTF8
				}
			}
			st.messages.Add(1)
			var frame []byte
			if deflate {
				frame, err = comp.CompileFrame(c.MsgOp, payload)
				if err != nil {
					return err
				}
			} else {
				frame = CompileFrame(c.MsgOp, payload)
			}
			if _, err := conn.Write(frame); err != nil {
				return err
			}
			msg = msg[:0]
		}
	}
}

// interopMsg is one message a client sends and expects echoed.
type interopMsg struct {
	text bool
	data []byte
}

// interopMessages are sent by each client and must come back unchanged:
// every length encoding, empty messages, non-ASCII text, and messages that
// the clients fragment.
func interopMessages() []interopMsg {
	var out []interopMsg
	for _, n := range []int{0, 1, 125, 126, 127, 1000, 65535, 65536, 300000} {
		txt := []byte(strings.Repeat("pushd é € 😀 ", n/15+1))
		cut := n // back to a code point boundary
		for cut > 0 && txt[cut]&0xc0 == 0x80 {
			cut--
		}
		bin := make([]byte, n)
		for i := range bin {
			bin[i] = byte(i * 7)
		}
		out = append(out, interopMsg{text: true, data: txt[:cut]}, interopMsg{data: bin})
	}
	return out
}

func TestInteropGorilla(t *testing.T) {
	for _, compress := range []bool{true, false} {
		t.Run(fmt.Sprintf("compress=%v", compress), func(t *testing.T) {
			var st echoStats
			addr, done := startEchoServer(t, &st)
			d := gws.Dialer{EnableCompression: compress, HandshakeTimeout: 5 * time.Second}
			c, resp, err := d.Dial("ws://"+addr+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := resp.Header.Get("Sec-WebSocket-Extensions"); strings.HasPrefix(got, DeflateExtension) != compress {
				t.Fatalf(
					"extensions %q with compression=%v",
					got, compress)
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			pong := make(chan string, 1)
			c.SetPongHandler(func(s string) error { pong <- s; return nil })
			if err := c.WriteControl(gws.PingMessage, []byte("are you there"), time.Now().Add(5*time.Second)); err != nil {
				t.Fatal(err)
			}
			msgs := interopMessages()
			for i, m := range msgs {
				typ := gws.BinaryMessage
				if m.text {
					typ = gws.TextMessage
				}
				if err := c.WriteMessage(typ, m.data); err != nil {
					t.Fatal(err)
				}
				gotTyp, got, err := c.ReadMessage()
				if err != nil {
					t.Fatalf(
						"message %d: %v (server: %v)",
						i, err, serverErr(done))
				}
				if gotTyp != typ || !bytes.Equal(got, m.data) {
					t.Fatalf(
						"message %d (%d bytes): echoed type %d, %d bytes",
						i, len(m.data), gotTyp, len(got))
				}
			}
			select {
			case s := <-pong:
				if s != "are you there" {
					t.Fatalf(
						"pong %q",
						s)
				}
			default:
				t.Fatal("no pong")
			}
			c.WriteMessage(gws.CloseMessage, gws.FormatCloseMessage(4001, "bye"))
			_, _, err = c.ReadMessage()
			var ce *gws.CloseError
			if !errors.As(err, &ce) || ce.Code != 4001 || ce.Text != "bye" {
				t.Fatalf(
					"close: %v",
					err)
			}
			if err := <-done; err != nil {
				t.Fatalf(
					"server: %v",
					err)
			}
			if st.messages.Load() != int64(len(msgs)) || st.pings.Load() != 1 || st.closeCode.Load() != 4001 {
				t.Fatalf(
					"server saw %d messages, %d pings, close %d",
					st.messages.Load(), st.pings.Load(), st.closeCode.Load())
			}
			if compress && st.compressed.Load() != int64(len(msgs)) {
				t.Fatalf(
					"%d of %d messages arrived compressed",
					st.compressed.Load(), len(msgs))
			}
		})
	}
}

func TestInteropCoder(t *testing.T) {
	for _, mode := range []cws.CompressionMode{cws.CompressionNoContextTakeover, cws.CompressionContextTakeover, cws.CompressionDisabled} {
		t.Run(fmt.Sprintf("mode=%d", mode), func(t *testing.T) {
			var st echoStats
			addr, done := startEchoServer(t, &st)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, resp, err := cws.Dial(ctx, "ws://"+addr+"/", &cws.DialOptions{
				CompressionMode:      mode,
				CompressionThreshold: 1,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			c.SetReadLimit(1 << 24)
			if got := resp.Header.Get("Sec-WebSocket-Extensions"); strings.HasPrefix(got, DeflateExtension) != (mode != cws.CompressionDisabled) {
				t.Fatalf(
					"extensions %q with mode %d",
					got, mode)
			}
			msgs := interopMessages()
			for i, m := range msgs {
				typ := cws.MessageBinary
				if m.text {
					typ = cws.MessageText
				}
				if err := c.Write(ctx, typ, m.data); err != nil {
					t.Fatal(err)
				}
				gotTyp, got, err := c.Read(ctx)
				if err != nil {
					t.Fatalf(
						"message %d: %v (server: %v)",
						i, err, serverErr(done))
				}
				if gotTyp != typ || !bytes.Equal(got, m.data) {
					t.Fatalf(
						"message %d (%d bytes): echoed type %v, %d bytes",
						i, len(m.data), gotTyp, len(got))
				}
			}
			// (coder's Ping needs a concurrent Read for the pong; pings are
			// covered by TestInteropGorilla.)
			if err := c.Close(cws.StatusGoingAway, "shutdown"); err != nil {
				t.Fatalf(
					"close: %v",
					err)
			}
			if err := <-done; err != nil {
				t.Fatalf(
					"server: %v",
					err)
			}
			if st.closeCode.Load() != 1001 {
				t.Fatalf(
					"server saw close %d",
					st.closeCode.Load())
			}
			t.Logf("%d messages, %d compressed", st.messages.Load(), st.compressed.Load())
		})
	}
}

func serverErr(done <-chan error) error {
	select {
	case err := <-done:
		return err
	case <-time.After(100 * time.Millisecond):
		return nil
	}
}
