package poller

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"errors"
	"fmt"
	"hash"
	"reflect"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Idle wss connections hold no AES-GCM state.
//
// After a TLS 1.3 handshake crypto/tls keeps one AES-GCM instance per
// direction for the connection's life: the expanded AES key schedule and
// the GHASH table, 784 bytes each in a 896-byte size class, so 1,792 of
// the ~4.3 KiB an idle wss connection cost (bench idle, pushd-wss,
// profiled with memprofilerate=1). An idle push connection seals a record
// every few seconds at most, so that state is kept only while it is used:
//
//   - At the end of the handshake the AES-GCM inside each direction's
//     record protection (crypto/tls's xorNonceAEAD, which XORs the record
//     sequence number into the static IV and calls an inner cipher.AEAD)
//     is replaced by a lazyGCM that holds just the AES key, derived from
//     the direction's traffic secret as RFC 8446 §7.3 says. Before the
//     swap the derivation is checked against the connection itself: the
//     derived IV must equal the IV crypto/tls holds, and a probe sealed
//     with the derived key must open with crypto/tls's own AES-GCM. A
//     connection that fails either check, or whose crypto/tls does not
//     have the expected layout, keeps crypto/tls's state untouched (and is
//     counted as TLSKeysKept).
//   - A lazyGCM builds a standard AES-GCM (cipher.NewGCM, the same
//     algorithm: the nonce is the one crypto/tls computes) on first use,
//     and the timing wheel drops it once the direction has been unused for
//     tlsCoolTime: one AES key expansion and one 784-byte allocation per
//     wake-up of a connection idle that long (TLSKeyRebuilds).
//
// Only AES-GCM under TLS 1.3 is handled. ChaCha20-Poly1305 state is just
// its key (no table to shed), and TLS 1.2 connections keep crypto/tls's
// state. A KeyUpdate from the peer makes crypto/tls install a fresh
// AES-GCM of its own for that direction, which that connection then keeps.

// tlsCoolTime is how long a direction's AES-GCM outlives its last use.
const tlsCoolTime = 2 * time.Second

// lazyGCM is one direction's AES-GCM, built on use and dropped when cold.
// It implements cipher.AEAD for crypto/tls's xorNonceAEAD.
type lazyGCM struct {
	mu   sync.Mutex
	a    cipher.AEAD  // nil while cold
	used atomic.Int64 // wheel tick of the last use while built; 0: cold
	c    *Conn
	n    uint8 // key length: 16 or 32
	key  [32]byte
}

func (g *lazyGCM) NonceSize() int { return 12 }
func (g *lazyGCM) Overhead() int  { return 16 }

func (g *lazyGCM) Seal(dst, nonce, plaintext, ad []byte) []byte {
	a, cold := g.acquire()
	out := a.Seal(dst, nonce, plaintext, ad)
	g.release(cold)
	return out
}

func (g *lazyGCM) Open(dst, nonce, ciphertext, ad []byte) ([]byte, error) {
	a, cold := g.acquire()
	out, err := a.Open(dst, nonce, ciphertext, ad)
	g.release(cold)
	return out, err
}

// acquire locks g and returns its AES-GCM, building it when cold.
func (g *lazyGCM) acquire() (cipher.AEAD, bool) {
	g.mu.Lock()
	cold := g.a == nil
	if cold {
		g.a = newGCM(g.key[:g.n])
		g.c.srv.stats.tlsKeyRebuilds.Add(1)
	}
	g.used.Store(g.c.srv.wheel.now.Load())
	return g.a, cold
}

// release unlocks g; a rebuilt AES-GCM gets the wheel's visit that will
// drop it again.
func (g *lazyGCM) release(rebuilt bool) {
	used := g.used.Load()
	g.mu.Unlock()
	if rebuilt {
		s := g.c.srv
		s.wheel.scheduleBefore(g.c, used+s.tlsCoolTicks)
	}
}

// cool drops g's AES-GCM when it has not been used for cool ticks (the
// next visit is scheduled by capDue). Wheel goroutine only.
func (g *lazyGCM) cool(now, cool int64) {
	if u := g.used.Load(); u == 0 || now-u < cool {
		return
	}
	g.mu.Lock()
	if u := g.used.Load(); u != 0 && now-u >= cool {
		g.a = nil
		g.used.Store(0)
	}
	g.mu.Unlock()
}

// built reports whether g holds an AES-GCM (tests).
func (g *lazyGCM) built() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.a != nil
}

func newGCM(key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic("poller: tls: " + err.Error()) // the key length was checked at install
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		panic("poller: tls: " + err.Error())
	}
	return a
}

// tlsKeys is a wss connection's pair of lazy AES-GCMs.
type tlsKeys struct {
	in, out lazyGCM
}

// tlsKeys returns c's lazy AES-GCM pair, nil for none.
func (c *Conn) tlsKeys() *tlsKeys {
	if c.tls == nil {
		return nil
	}
	return c.tls.keys.Load()
}

// tlsCool runs the wheel's idle check on c's AES-GCM state; capDue then
// schedules the next one. Wheel goroutine only.
func (c *Conn) tlsCool(now int64) {
	if k := c.tlsKeys(); k != nil {
		k.in.cool(now, c.srv.tlsCoolTicks)
		k.out.cool(now, c.srv.tlsCoolTicks)
	}
}

// errTLSLayout reports a crypto/tls whose internals are not the ones
// lazyGCM was written against.
var errTLSLayout = errors.New("poller: tls: crypto/tls layout not recognised")

// tlsAEADLayout holds where crypto/tls keeps a direction's record
// protection: the offsets of Conn.in and Conn.out, and within halfConn of
// cipher and trafficSecret (fixed after findTLSAEAD), and within
// xorNonceAEAD of nonceMask and aead (learnt from the first connection,
// under Server.tlsAEADMu).
type tlsAEADLayout struct {
	in, out       uintptr
	cipher        uintptr
	secret        uintptr
	ok            bool
	gcmTLS13Inner string // type of the AES-GCM crypto/tls uses for TLS 1.3

	xorType    reflect.Type // *crypto/tls.xorNonceAEAD
	mask, aead uintptr
}

// findTLSAEAD locates the fields through reflect; ok is false when any
// is missing or of another type.
func findTLSAEAD() tlsAEADLayout {
	var l tlsAEADLayout
	t := reflect.TypeFor[tls.Conn]()
	in, ok1 := t.FieldByName("in")
	out, ok2 := t.FieldByName("out")
	if !ok1 || !ok2 || in.Type != out.Type || in.Type.Kind() != reflect.Struct || in.Type.Name() != "halfConn" {
		return l
	}
	h := in.Type
	ci, ok1 := h.FieldByName("cipher")
	sec, ok2 := h.FieldByName("trafficSecret")
	if !ok1 || !ok2 || ci.Type != reflect.TypeFor[any]() || sec.Type != reflect.TypeFor[[]byte]() {
		return l
	}
	return tlsAEADLayout{in: in.Offset, out: out.Offset, cipher: ci.Offset, secret: sec.Offset, ok: true,
		gcmTLS13Inner: "*gcm.GCMWithXORCounterNonce"}
}

// xorNonce returns the nonce mask and the inner AEAD slot of a
// crypto/tls xorNonceAEAD held in cipher, or an error.
func (l *tlsAEADLayout) xorNonce(v any) (*[12]byte, *cipher.AEAD, error) {
	rt := reflect.TypeOf(v)
	if rt == nil || rt.Kind() != reflect.Pointer || rt.Elem().Name() != "xorNonceAEAD" || rt.Elem().PkgPath() != "crypto/tls" {
		return nil, nil, fmt.Errorf("%w: record cipher %v", errTLSLayout, rt)
	}
	if l.xorType != rt {
		m, ok1 := rt.Elem().FieldByName("nonceMask")
		a, ok2 := rt.Elem().FieldByName("aead")
		if !ok1 || !ok2 || m.Type != reflect.TypeFor[[12]byte]() || a.Type != reflect.TypeFor[cipher.AEAD]() {
			return nil, nil, fmt.Errorf("%w: xorNonceAEAD fields", errTLSLayout)
		}
		l.mask, l.aead, l.xorType = m.Offset, a.Offset, rt
	}
	p := reflect.ValueOf(v).UnsafePointer()
	return (*[12]byte)(unsafe.Add(p, l.mask)), (*cipher.AEAD)(unsafe.Add(p, l.aead)), nil
}

// installTLSKeys replaces tc's AES-GCM state with lazy ones. Call it on
// the handshake goroutine, after the handshake and before the connection
// joins a loop. It reports why it did not when it did not.
func (s *Server) installTLSKeys(c *Conn, st *tls.ConnectionState) error {
	if st.Version != tls.VersionTLS13 {
		return nil // TLS 1.2: left as is (not counted)
	}
	var h func() hash.Hash
	var n int
	switch st.CipherSuite {
	case tls.TLS_AES_128_GCM_SHA256:
		h, n = sha256.New, 16
	case tls.TLS_AES_256_GCM_SHA384:
		h, n = sha512.New384, 32
	default:
		return nil // ChaCha20-Poly1305: nothing worth shedding
	}
	l := &s.tlsAEAD
	if !l.ok {
		return errTLSLayout
	}
	k := &tlsKeys{}
	p := unsafe.Pointer(c.tls.tc)
	type slot struct {
		g     *lazyGCM
		inner *cipher.AEAD
	}
	var slots [2]slot
	for i, d := range [2]struct {
		off uintptr
		g   *lazyGCM
	}{{l.in, &k.in}, {l.out, &k.out}} {
		hc := unsafe.Add(p, d.off)
		secret := *(*[]byte)(unsafe.Add(hc, l.secret))
		s.tlsAEADMu.Lock()
		mask, inner, err := l.xorNonce(*(*any)(unsafe.Add(hc, l.cipher)))
		s.tlsAEADMu.Unlock()
		if err != nil {
			return err
		}
		if got := reflect.TypeOf(*inner); got == nil || got.String() != l.gcmTLS13Inner {
			return fmt.Errorf("%w: inner AEAD %v", errTLSLayout, got)
		}
		key, err := expandLabel(h, secret, "key", n)
		if err != nil {
			return err
		}
		iv, err := expandLabel(h, secret, "iv", 12)
		if err != nil {
			return err
		}
		if [12]byte(iv) != *mask {
			return fmt.Errorf("%w: derived IV differs", errTLSLayout)
		}
		a := newGCM(key)
		// A probe sealed with the derived key must open with crypto/tls's
		// own AES-GCM (Open keeps no state in it).
		probe := a.Seal(nil, iv, []byte("pushd"), []byte("probe"))
		if _, err := (*inner).Open(nil, iv, probe, []byte("probe")); err != nil {
			return fmt.Errorf("%w: derived key differs", errTLSLayout)
		}
		g := d.g
		g.c, g.n = c, uint8(n)
		copy(g.key[:], key)
		g.a = a
		g.used.Store(s.wheel.now.Load())
		slots[i] = slot{g, inner}
	}
	for _, sl := range slots {
		*sl.inner = sl.g
	}
	c.tls.keys.Store(k)
	return nil
}

// expandLabel is HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
func expandLabel(h func() hash.Hash, secret []byte, label string, n int) ([]byte, error) {
	info := make([]byte, 0, 4+6+len(label))
	info = append(info, byte(n>>8), byte(n), byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, 0)
	return hkdf.Expand(h, secret, string(info), n)
}
