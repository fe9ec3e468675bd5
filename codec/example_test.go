package codec_test

import (
	"fmt"

	"github.com/gobwas/ws"

	"github.com/pushd/pushd/codec"
)

// A server-side Parser fed a client stream in arbitrary pieces, as a socket
// would deliver it: a fragmented text message with a ping in the middle,
// then a close frame.
func ExampleParser_Next() {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	var stream []byte
	stream = codec.AppendMaskedFrame(stream, ws.OpText, false, []byte("hél"), key)
	stream = codec.AppendMaskedFrame(stream, ws.OpPing, true, []byte("?"), key)
	stream = codec.AppendMaskedFrame(stream, ws.OpContinuation, true, []byte("lo"), key)
	stream = codec.AppendMaskedFrame(stream, ws.OpClose, true, []byte("\x03\xe8bye"), key)

	cfg := &codec.Config{Role: codec.RoleServer, MaxMessageSize: 1 << 20}
	var p codec.Parser
	p.Init(cfg)

	var msg []byte
	// Three reads: the first ends inside the first frame's header.
	for _, read := range [][]byte{stream[:4], stream[4:13], stream[13:]} {
		for len(read) > 0 {
			c, n, ok, err := p.Next(read)
			if err != nil {
				fmt.Println("fail with close code", codec.CloseCode(err))
				return
			}
			read = read[n:]
			if !ok {
				break // need more bytes: wait for the next read
			}
			switch c.MsgOp {
			case ws.OpText, ws.OpBinary:
				msg = append(msg, c.Payload...)
				if c.MsgEnd {
					fmt.Printf("message %q\n", msg)
					msg = msg[:0]
				}
			case ws.OpPing:
				fmt.Printf("ping %q: reply %q\n", c.Payload, codec.AppendFrame(nil, ws.OpPong, true, c.Payload))
			case ws.OpClose:
				code, reason, err := codec.ParseClose(c.Payload)
				fmt.Println("close", code, string(reason), err)
			}
		}
	}
	// Output:
	// ping "?": reply "\x8a\x01?"
	// message "héllo"
	// close 1000 bye <nil>
}

// Broadcast: compile a frame once and write the same bytes to every
// subscriber; with permessage-deflate, compress once.
func ExampleCompileFrame() {
	frame := codec.CompileFrame(ws.OpText, []byte(`{"ch":"room:1","seq":1}`))
	fmt.Printf("% x\n", frame[:2])

	var c codec.Compressor
	zframe, err := c.CompileFrame(ws.OpText, []byte(`{"ch":"room:1","seq":1}`))
	fmt.Println(zframe[0] == 0xc1, err) // FIN + RSV1 + text
	// Output:
	// 81 17
	// true <nil>
}
