//go:build !purego

package codec

// unmaskWords: the vector path is added in a following change; until then
// amd64 uses the portable word-wide loop too.
func unmaskWords(b []byte, k32 uint32) []byte { return unmaskGeneric(b, k32) }
