// Package pushdtest starts the real pushd binary for end-to-end tests.
//
// It owns building cmd/pushd (once per test binary when its TestMain calls
// Main, else into a test's temp dir), starting it on
// 127.0.0.1:0 ports, learning the bound addresses from the structured
// "listening" log lines, reading the admin /stats document, and stopping the
// process when the test ends. Tests in conformance/, cmd/pushd/ and bench/
// use it so that every end-to-end check runs against the same binary users
// run.
//
// It must never be imported by non-test server code: it calls testing.TB
// helpers and runs the go tool.
package pushdtest
