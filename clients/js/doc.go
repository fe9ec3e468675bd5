// Package jsclient carries pushd's JavaScript client, clients/js/pushd.js
// (an ES module for browsers and Node >= 20, typed by pushd.d.ts), so that
// cmd/pushd can serve it on the public port at /pushd.js. The JavaScript
// file is the canonical source; this package only embeds it.
//
// The Go tests in this folder build the real pushd binary and run the
// client's Node tests (node --test test/) against it: reconnect with full
// jitter after kill -9, resume by (epoch, seq) with no loss, the server's
// reconnect hint, and the README's delivery guarantees rows
// (test/faults.test.mjs). TestNpmPackInstallsAndImports packs the npm
// package (@pushd/client, package.json), installs the tarball into a fresh
// project and imports and type-checks it there.
//
// It must never hold logic of its own: the bytes are the file's.
package jsclient
