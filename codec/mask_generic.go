//go:build purego || !amd64

package codec

// unmaskWords is the portable word-wide loop, used with the purego build tag
// and on every architecture but amd64.
func unmaskWords(b []byte, k32 uint32) ([]byte, uint64) { return unmaskGeneric(b, k32) }
