//go:build purego || !amd64

package codec

// unmaskWords is the portable word-wide loop (build tag purego, or not
// amd64).
func unmaskWords(b []byte, k32 uint32) []byte { return unmaskGeneric(b, k32) }
