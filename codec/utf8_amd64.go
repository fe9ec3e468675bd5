//go:build !purego

package codec

import (
	"unicode/utf8"

	"golang.org/x/sys/cpu"
)

// utf8SIMDMin is the input size from which the AVX2 validator is used; below
// it unicode/utf8.Valid is as fast (BenchmarkUTF8).
const utf8SIMDMin = 32

// validUTF8 reports whether p is valid UTF-8, like unicode/utf8.Valid: with
// AVX2 (utf8_amd64.s) when the CPU has it and p is long enough, else with
// the standard library.
func validUTF8(p []byte) bool {
	if len(p) < utf8SIMDMin || !cpu.X86.HasAVX2 {
		return utf8.Valid(p)
	}
	n := len(p) &^ 31
	var tail [32]byte
	copy(tail[:], p[n:])
	return utf8ValidAVX2(p[:n], &tail)
}

// utf8ValidAVX2 validates body (len a multiple of 32) followed by tail, the
// rest of the input padded with zeros.
//
//go:noescape
func utf8ValidAVX2(body []byte, tail *[32]byte) bool
