//go:build purego || !amd64

package codec

import "unicode/utf8"

// validUTF8 reports whether p is valid UTF-8 (portable build: the standard
// library's validator).
func validUTF8(p []byte) bool { return utf8.Valid(p) }
