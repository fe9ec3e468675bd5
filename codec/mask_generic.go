//go:build purego || !amd64

package codec

// vectorMin is the input size from which unmask hands whole blocks to
// unmaskBlocks; shorter inputs are done word by word inline.
const vectorMin = 32

// unmaskBlocks is the portable word-wide loop, used with the purego build
// tag and on every architecture but amd64.
func unmaskBlocks(b []byte, k32 uint32) ([]byte, uint64) { return unmaskGeneric(b, k32) }
