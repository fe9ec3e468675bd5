package main

import (
	"bytes"
	"embed"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"strings"

	jsclient "github.com/pushd/pushd/clients/js"
	"github.com/pushd/pushd/poller"
	"github.com/pushd/pushd/protocol"
)

// demoAssets are the QR-login demo's page and scripts (cmd/pushd/demo).
//
//go:embed demo/qr.html demo/qr.js demo/demo.js
var demoAssets embed.FS

// demoConfigMark is replaced in demo/qr.html by the page's settings (JSON).
const demoConfigMark = "{{PUSHD_DEMO_CONFIG}}"

// demoFlags registers the demo's flag on fs.
func demoFlags(fs *flag.FlagSet, c *Config) {
	fs.BoolVar(&c.Demo, "demo", true, "serve the QR-login demo (/demo/qr) and the JS client (/pushd.js) as plain GETs on -listen; set -demo=false in production")
}

// demoFile is one response of the public port's static files.
type demoFile struct {
	ctype string
	body  []byte
}

// demoHandler is the pushd.v1 handler plus the static files served on the
// WebSocket listener (poller.HTTPResponder): /pushd.js (the JS client),
// /demo/qr (the QR-login page) and its scripts under /demo/qr/. Every
// other plain GET keeps the poller's 400. The files are built once and
// never modified, so Respond is safe on every connection's goroutine.
type demoHandler struct {
	*protocol.Handler
	files map[string]demoFile
}

var (
	_ poller.Handler       = (*demoHandler)(nil)
	_ poller.Drainer       = (*demoHandler)(nil)
	_ poller.HTTPResponder = (*demoHandler)(nil)
)

// wrapDemo returns h itself with -demo=false, else h serving the demo's
// files too.
func wrapDemo(h *protocol.Handler, cfg Config) (poller.Handler, error) {
	if !cfg.Demo {
		return h, nil
	}
	files, err := demoFiles(cfg)
	if err != nil {
		return nil, err
	}
	return &demoHandler{Handler: h, files: files}, nil
}

// demoPageConfig is what the page learns from the server: where the admin
// API is, for the curl command it shows, and whether that needs a key
// (never the key itself: the page is public).
type demoPageConfig struct {
	Admin       string `json:"admin"`
	NeedsAPIKey bool   `json:"needsApiKey"`
}

// demoFiles builds the responses.
func demoFiles(cfg Config) (map[string]demoFile, error) {
	read := func(name string) ([]byte, error) {
		b, err := demoAssets.ReadFile("demo/" + name)
		if err != nil {
			return nil, fmt.Errorf("demo asset %s: %w", name, err)
		}
		return b, nil
	}
	page, err := read("qr.html")
	if err != nil {
		return nil, err
	}
	// json.Marshal escapes <, > and &, so the value cannot end the
	// <script> element it is placed in.
	pc, err := json.Marshal(demoPageConfig{Admin: demoAdminAddr(cfg.AdminListen), NeedsAPIKey: cfg.AdminAPIKey != "" || cfg.AdminAPIKeyFile != ""})
	if err != nil {
		return nil, fmt.Errorf("demo config: %w", err)
	}
	if bytes.Count(page, []byte(demoConfigMark)) != 1 {
		return nil, fmt.Errorf("demo asset qr.html: want exactly one %s", demoConfigMark)
	}
	page = bytes.Replace(page, []byte(demoConfigMark), pc, 1)
	qr, err := read("qr.js")
	if err != nil {
		return nil, err
	}
	app, err := read("demo.js")
	if err != nil {
		return nil, err
	}
	html := demoFile{ctype: "text/html; charset=utf-8", body: page}
	return map[string]demoFile{
		"/pushd.js":        {ctype: jsclient.ContentType, body: jsclient.Source()},
		"/demo/qr":         html,
		"/demo/qr/":        html,
		"/demo/qr/qr.js":   {ctype: jsclient.ContentType, body: qr},
		"/demo/qr/demo.js": {ctype: jsclient.ContentType, body: app},
	}, nil
}

// demoAdminAddr is the admin address as a person on this machine would
// type it: an unspecified host (":9090", "0.0.0.0:9090", "[::]:9090")
// becomes 127.0.0.1.
func demoAdminAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// Respond implements poller.HTTPResponder for the demo's files.
func (d *demoHandler) Respond(r *poller.Request) (status int, contentType string, body []byte, ok bool) {
	path, _, _ := strings.Cut(r.URI, "?")
	path, _, _ = strings.Cut(path, "#")
	f, found := d.files[path]
	if !found {
		return 0, "", nil, false
	}
	return 200, f.ctype, f.body, true
}
