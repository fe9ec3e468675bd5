package fanout_test

import (
	"bytes"
	"compress/flate"
	"context"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/gobwas/ws"
	"github.com/panjf2000/ants/v2"

	"github.com/pushd/pushd/cluster"
	"github.com/pushd/pushd/codec"
	"github.com/pushd/pushd/fanout"
)

// inflate decompresses a permessage-deflate message payload with the
// standard library (an implementation independent of the server's).
func inflate(t *testing.T, z []byte) []byte {
	t.Helper()
	r := flate.NewReader(io.MultiReader(bytes.NewReader(z), strings.NewReader("\x00\x00\xff\xff\x01\x00\x00\xff\xff")))
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("inflate %d bytes: %v", len(z), err)
	}
	return out
}

// kept returns the frames f was given, each with its header.
func (f *fakeSub) kept() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.log...)
}

func TestDeflateOncePerFormat(t *testing.T) {
	h, m := newHub(t, fanout.Config{Deflate: fanout.DeflateConfig{Channels: []string{"game:*"}, MinSize: 256}}, cluster.MemoryConfig{})
	type member struct {
		sub  *fakeSub
		opts fanout.SubscribeOptions
	}
	members := []member{
		{newFakeSub(0), fanout.SubscribeOptions{Deflate: true}},
		{newFakeSub(0), fanout.SubscribeOptions{Deflate: true}},
		{newFakeSub(0), fanout.SubscribeOptions{}},
		{newFakeSub(0), fanout.SubscribeOptions{Format: fanout.FormatRaw, Deflate: true}},
		{newFakeSub(0), fanout.SubscribeOptions{Format: fanout.FormatRaw, Deflate: true}},
		{newFakeSub(0), fanout.SubscribeOptions{Format: fanout.FormatRaw}},
	}
	for _, ch := range []string{"game:1", "chat:1"} {
		for _, mb := range members {
			mb.sub.keep = true
			subscribe(t, h, mb.sub, ch, mb.opts)
		}
	}
	big := fmt.Sprintf(`{"players":[%s0]}`, strings.Repeat(`{"x":12,"y":34,"hp":100,"name":"player"},`, 100))
	bin := bytes.Repeat([]byte{0xff, 0x00, 0x80, 0x01}, 300) // not UTF-8: binary in raw, base64 in JSON
	pubs := []struct {
		ch, data string
		compress bool
	}{
		{"game:1", big, true},
		{"game:1", `{"small":1}`, false}, // below MinSize
		{"chat:1", big, false},           // channel not selected
		{"game:1", string(bin), true},
	}
	for _, p := range pubs {
		publish(t, m, p.ch, p.data)
	}
	plainOf := func(mb member, i int) []byte { return members[2+3*int(mb.opts.Format)].sub.kept()[i] }
	saw := map[[2]int]uintptr{} // (pub, format) -> first compressed frame's address
	for mi, mb := range members {
		got := mb.sub.kept()
		if len(got) != len(pubs) {
			t.Fatalf("member %d got %d frames, want %d", mi, len(got), len(pubs))
		}
		for i, p := range pubs {
			fr := got[i]
			hd, n, err := codec.ParseHeader(fr)
			if err != nil {
				t.Fatal(err)
			}
			compressed := hd.Rsv == ws.Rsv(true, false, false)
			if want := p.compress && mb.opts.Deflate; compressed != want {
				t.Fatalf("member %d (%v deflate=%v) pub %d: compressed=%v, want %v", mi, mb.opts.Format, mb.opts.Deflate, i, compressed, want)
			}
			plain := plainOf(mb, i)
			_, pn, _ := codec.ParseHeader(plain)
			if !compressed {
				if !bytes.Equal(fr, plain) {
					t.Fatalf("member %d pub %d: plain frame differs from the plain subscriber's", mi, i)
				}
				continue
			}
			if !bytes.Equal(inflate(t, fr[n:]), plain[pn:]) {
				t.Fatalf("member %d pub %d: inflated frame differs from the plain one", mi, i)
			}
			if len(fr) >= len(plain) {
				t.Fatalf("member %d pub %d: compressed %d bytes, plain %d", mi, i, len(fr), len(plain))
			}
			key := [2]int{i, int(mb.opts.Format)}
			addr := uintptr(unsafe.Pointer(unsafe.SliceData(fr)))
			if first, ok := saw[key]; ok && first != addr {
				t.Fatalf("pub %d format %v: deflate subscribers got different compressed buffers (compressed per subscriber)", i, mb.opts.Format)
			}
			saw[key] = addr
			t.Logf("pub %d %v: plain %d B, compressed %d B", i, mb.opts.Format, len(plain), len(fr))
		}
	}
	if st := h.Stats(); st.Deflated != 4 {
		t.Fatalf("Deflated = %d, want 4 (2 publications × 2 formats, once each)", st.Deflated)
	}
}

func TestDeflateConfigErrors(t *testing.T) {
	m, err := cluster.NewMemory(cluster.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []fanout.DeflateConfig{{Level: 10}, {Level: -1}, {Channels: []string{""}}} {
		if _, err := fanout.New(fanout.Config{Broker: m, Deflate: cfg}); err == nil {
			t.Errorf("New with Deflate %+v succeeded", cfg)
		}
	}
}

// BenchmarkDeflateFanout publishes a 2 KB JSON game state to 15,000
// subscribers, all with permessage-deflate negotiated, with the channel
// compressed (deflate=true) and not (deflate=false, the reference in the
// same run): compression costs one Compress per publication, not per
// subscriber. wire-B/delivery is the frame each subscriber is queued.
func BenchmarkDeflateFanout(b *testing.B) {
	pool, err := ants.NewPool(64, ants.WithNonblocking(true))
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Release()
	payload := []byte(fmt.Sprintf(`{"tick":1,"players":[%s{}]}`, strings.Repeat(`{"id":12,"x":104,"y":233,"hp":100,"team":"red"},`, 40)))
	const n = 15000
	for _, deflate := range []bool{false, true} {
		b.Run(fmt.Sprintf("subs=%d/payload=%d/deflate=%v", n, len(payload), deflate), func(b *testing.B) {
			cfg := fanout.Config{Pool: pool, ChunkSize: 512}
			if deflate {
				cfg.Deflate = fanout.DeflateConfig{Channels: []string{"*"}}
			}
			h, m := newHub(b, cfg, cluster.MemoryConfig{HistorySize: -1})
			var left atomic.Int64
			done := make(chan struct{}, 1)
			subs := make([]*fakeSub, n)
			for i := range subs {
				f := newFakeSub(8)
				f.left, f.done = &left, done
				subs[i] = f
				subscribe(b, h, f, "game:1", fanout.SubscribeOptions{Deflate: true})
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				left.Store(n)
				if _, err := m.Publish(ctx, "game:1", payload); err != nil {
					b.Fatal(err)
				}
				<-done
			}
			b.StopTimer()
			subs[0].mu.Lock()
			wire := len(subs[0].ring[(subs[0].n-1)%len(subs[0].ring)])
			subs[0].mu.Unlock()
			b.ReportMetric(float64(wire), "wire-B/delivery")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/delivery")
		})
	}
}
