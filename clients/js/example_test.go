package jsclient_test

import (
	"bytes"
	"fmt"

	jsclient "github.com/pushd/pushd/clients/js"
)

// cmd/pushd serves the module at /pushd.js with this content type.
func ExampleSource() {
	src := jsclient.Source()
	fmt.Println(jsclient.ContentType)
	fmt.Println(bytes.Contains(src, []byte("export function connect(url, options)")))
	// Output:
	// text/javascript; charset=utf-8
	// true
}
