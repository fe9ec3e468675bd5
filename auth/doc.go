// Package auth decides who may connect to pushd and what they may
// subscribe to: JWT verification (HS256, RS256, ES256, EdDSA with
// github.com/golang-jwt/jwt/v5, always restricted to the algorithms of the
// configured keys), token extraction from an upgrade request (?token=,
// Authorization: Bearer, or the bearer.<token> subprotocol entry), the
// Origin allowlist, and what a connection may subscribe to (Grant: the
// token's channel patterns and its personal channel user:<sub>).
// Verify checks a bare token for the in-band refresh op. JWKS (jwks.go,
// MicahParks/keyfunc) supplies RS256/ES256/EdDSA keys by kid from a JWK
// Set URL: it is the one type here that does I/O, on its own refresh
// goroutine (ended by the ctx given to NewJWKS) and, rate-limited, on a
// token with an unknown kid; malformed keys are skipped with a log line.
//
// # Concurrency and hot path
//
// Every type here is immutable after construction and safe for concurrent
// use. Check runs once per upgrade request, never per message. Nothing in this package does I/O after New:
// keys are parsed from bytes the caller read (cmd/pushd reads the files and
// rebuilds the Authenticator on SIGHUP).
//
// # What it must never do
//
// Read files, the network or the environment; log; keep per-connection
// state (token expiry is enforced by the poller's timing wheel, which the
// protocol arms from Grant.Expires).
package auth
