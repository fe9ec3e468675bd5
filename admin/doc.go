// Package admin is pushd's operator HTTP surface: one route table (health,
// stats, metrics, publish, the server API, opt-in pprof) served on the
// admin listener, with authentication as middleware over the whole table.
//
// # Security contract
//
// With Config.APIKey set, every request needs "Authorization: Bearer
// <key>" (compared in constant time) except GET /livez and GET /readyz,
// and GET /metrics when Config.OpenMetrics says so (for scrapers that
// cannot send a header). The check runs before routing, so an unknown
// path, a wrong method and every route added to the table later are all
// behind it: no route can skip it. pprof (and the memory-release hook
// measurements use) is served only with Config.Pprof. No route serves the
// command line or the environment (/debug/pprof/cmdline is not
// registered), so a key given as a flag is never echoed.
//
// # Server API
//
// ServerAPI adds POST /api/publish (many channels), /api/disconnect,
// /api/subscribe, /api/unsubscribe (a user, on every node, through the
// broker's control channel) and GET /api/node, behind the same key.
// PresenceAPI adds GET /api/presence?ch=&cursor=&limit= (a page of a
// presence channel's users, cluster-wide) and GET /api/presence/stats?ch=
// (its connection and user counts).
//
// # Errors
//
// Errors are JSON, {"error":"<message>","code":"<code>"}, where code is
// one of the stable Code values (unauthorized, bad_request, ...).
//
// # Concurrency
//
// A Server is safe for concurrent use. Run serves until Shutdown (or ctx)
// ends it; handlers run on net/http's goroutines, one per request, and
// never block on a WebSocket client.
package admin
