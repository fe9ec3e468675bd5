package jsclient

import _ "embed" // for go:embed

// source is clients/js/pushd.js, embedded at build time (a string, so it
// cannot be modified).
//
//go:embed pushd.js
var source string

// ContentType is the media type to serve Source with.
const ContentType = "text/javascript; charset=utf-8"

// Source returns the client module, pushd.js, as a new byte slice the
// caller owns.
func Source() []byte { return []byte(source) }
