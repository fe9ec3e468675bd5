package main

import (
	"crypto"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"strings"
	"sync/atomic"

	"github.com/pushd/pushd/auth"
	"github.com/pushd/pushd/poller"
)

// securityFlags registers the security flags (README "Security").
func securityFlags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.JWTHS256Secret, "jwt-hs256-secret", "", "HS256 shared secret for client tokens (at least 32 bytes); prefer -jwt-hs256-secret-file or PUSHD_JWT_HS256_SECRET")
	fs.StringVar(&c.JWTHS256SecretFile, "jwt-hs256-secret-file", "", "file holding the HS256 secret (trailing newline ignored); re-read on SIGHUP")
	fs.StringVar(&c.JWTPublicKey, "jwt-public-key", "", "PEM file of token verification public keys: RSA (RS256), ECDSA P-256 (ES256), Ed25519 (EdDSA); re-read on SIGHUP")
	fs.StringVar(&c.JWTJWKSURL, "jwt-jwks-url", "", "JWK Set URL of token verification keys (RS256, ES256, EdDSA by kid; OIDC providers' jwks_uri); cached, refreshed periodically and on an unknown kid")
	fs.DurationVar(&c.JWTJWKSRefresh, "jwt-jwks-refresh", auth.DefaultJWKSRefresh, "periodic refresh of -jwt-jwks-url (a failed refresh keeps the cached keys)")
	fs.StringVar(&c.JWTAud, "jwt-aud", "", "required token audience (aud); empty: not checked")
	fs.StringVar(&c.JWTIss, "jwt-iss", "", "required token issuer (iss); empty: not checked")
	fs.DurationVar(&c.JWTLeeway, "jwt-leeway", 0, "clock skew tolerated on exp/nbf/iat")
	fs.BoolVar(&c.AuthRequired, "auth-required", false, "with a JWT key: refuse (401) upgrades without a token (default: anonymous clients get -public channels only)")
	fs.StringVar(&c.AllowedOrigins, "allowed-origins", "", "comma-separated allowed Origin values, scheme://host[:port], '*.' wildcard subdomains (https://*.example.com), '*' any; empty: no Origin check")
	fs.BoolVar(&c.AllowNoOrigin, "allow-no-origin", false, "with -allowed-origins: also admit requests without an Origin header (non-browser clients)")
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", 0, "max connections from one source address (IPv6: /64), 503 + Retry-After above; 0: no cap")
	fs.Float64Var(&c.ConnectRate, "connect-rate", 0, "max new connections per second from one source address (token bucket), 503 + Retry-After above; 0: no limit")
	fs.IntVar(&c.ConnectBurst, "connect-burst", 0, "connect bucket depth (0: -connect-rate rounded up)")
	fs.Float64Var(&c.MaxMessageRate, "max-message-rate", 0, "max inbound messages per second per connection (token bucket), close 1008 above; 0: no cap")
	fs.IntVar(&c.MaxMessageBurst, "max-message-burst", 0, "message bucket depth (0: twice -max-message-rate)")
	fs.StringVar(&c.TLSListen, "tls-listen", "", "wss listen address, served on the lean event loops (with -tls-cert/-tls-key; certificate re-read on SIGHUP)")
	fs.StringVar(&c.TLSMinVersion, "tls-min-version", "1.2", "lowest TLS version -tls-listen accepts: 1.2 or 1.3")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate chain for -tls-listen")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key for -tls-listen")
	fs.StringVar(&c.AdminAPIKey, "admin-api-key", "", "API key every admin route but /livez and /readyz requires (Authorization: Bearer <key>); required when -admin-listen is not loopback; prefer -admin-api-key-file or PUSHD_ADMIN_API_KEY")
	fs.StringVar(&c.AdminAPIKeyFile, "admin-api-key-file", "", "file holding the admin API key (trailing newline ignored)")
	fs.BoolVar(&c.AdminMetricsOpen, "admin-metrics-open", false, "serve GET /metrics without the admin API key (for scrapers that cannot send one)")
	fs.BoolVar(&c.AdminPprof, "admin-pprof", false, "serve /debug/pprof/ (no cmdline) and POST /debug/freeosmemory on the admin listener")
}

// jwtEnabled reports whether any token key is configured.
func (c *Config) jwtEnabled() bool {
	return c.JWTHS256Secret != "" || c.JWTHS256SecretFile != "" || c.JWTPublicKey != "" || c.JWTJWKSURL != ""
}

// validateSecurity checks the security flags and loads the key files once
// (so -check-config reports a bad key).
func (c *Config) validateSecurity() []error {
	var errs []error
	if c.jwtEnabled() && !c.publicSet {
		// With tokens, nothing is public unless said so.
		c.publicPatterns = []string{}
	}
	if c.JWTHS256Secret != "" && c.JWTHS256SecretFile != "" {
		errs = append(errs, errors.New("-jwt-hs256-secret and -jwt-hs256-secret-file are exclusive"))
	}
	if c.AuthRequired && !c.jwtEnabled() {
		errs = append(errs, errors.New("-auth-required needs a JWT key (-jwt-hs256-secret[-file] or -jwt-public-key)"))
	}
	if c.JWTJWKSURL != "" {
		if err := auth.ValidJWKSURL(c.JWTJWKSURL); err != nil {
			errs = append(errs, fmt.Errorf("-jwt-jwks-url: %w", err))
		}
		if c.JWTJWKSRefresh <= 0 {
			errs = append(errs, fmt.Errorf("-jwt-jwks-refresh must be positive (got %v)", c.JWTJWKSRefresh))
		}
	}
	if c.JWTLeeway < 0 {
		errs = append(errs, fmt.Errorf("-jwt-leeway must not be negative (got %v)", c.JWTLeeway))
	}
	if _, err := c.authenticator(); err != nil {
		errs = append(errs, err)
	}
	for name, v := range map[string]float64{"-connect-rate": c.ConnectRate, "-max-message-rate": c.MaxMessageRate} {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			errs = append(errs, fmt.Errorf("%s must be a finite non-negative number (got %v)", name, v))
		}
	}
	for name, v := range map[string]int{"-max-conns-per-ip": c.MaxConnsPerIP, "-connect-burst": c.ConnectBurst, "-max-message-burst": c.MaxMessageBurst} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative (got %d)", name, v))
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") || (c.TLSListen != "") != (c.TLSCert != "") {
		errs = append(errs, errors.New("-tls-listen, -tls-cert and -tls-key go together"))
	} else if c.TLSCert != "" {
		if _, err := loadCert(c.TLSCert, c.TLSKey); err != nil {
			errs = append(errs, err)
		}
		if c.Poller != poller.BackendLean {
			errs = append(errs, fmt.Errorf("-tls-listen needs -poller %s (wss runs on the lean loops; got %q)", poller.BackendLean, c.Poller))
		}
	}
	if _, ok := tlsVersions[c.TLSMinVersion]; !ok {
		errs = append(errs, fmt.Errorf("-tls-min-version must be 1.2 or 1.3 (got %q)", c.TLSMinVersion))
	}
	c.adminKey = c.AdminAPIKey
	if c.AdminAPIKeyFile != "" {
		if c.AdminAPIKey != "" {
			errs = append(errs, errors.New("-admin-api-key and -admin-api-key-file are exclusive"))
		} else if b, err := os.ReadFile(c.AdminAPIKeyFile); err != nil {
			errs = append(errs, fmt.Errorf("-admin-api-key-file: %w", err))
		} else if c.adminKey = strings.TrimRight(string(b), "\r\n"); c.adminKey == "" {
			errs = append(errs, errors.New("-admin-api-key-file: the file is empty"))
		}
	}
	if c.adminKey == "" && !loopbackAddr(c.AdminListen) {
		errs = append(errs, fmt.Errorf("-admin-listen %s is not loopback: set -admin-api-key-file or PUSHD_ADMIN_API_KEY (every admin route but /livez and /readyz needs it)", c.AdminListen))
	}
	return errs
}

// loopbackAddr reports whether a listen address binds loopback only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// authenticator reads the key files and builds the Authenticator; nil
// when neither tokens nor an Origin policy are configured (the protocol
// then behaves as without auth). Called at startup and on SIGHUP.
func (c *Config) authenticator() (*auth.Authenticator, error) {
	if !c.jwtEnabled() && c.AllowedOrigins == "" {
		return nil, nil
	}
	ac := auth.Config{Required: c.AuthRequired}
	ac.Keys = auth.KeyConfig{Audience: c.JWTAud, Issuer: c.JWTIss, Leeway: c.JWTLeeway, JWKS: c.jwks}
	var errs []error
	switch {
	case c.JWTHS256Secret != "":
		ac.Keys.HS256Secret = []byte(c.JWTHS256Secret)
	case c.JWTHS256SecretFile != "":
		b, err := os.ReadFile(c.JWTHS256SecretFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("-jwt-hs256-secret-file: %w", err))
		}
		ac.Keys.HS256Secret = []byte(strings.TrimRight(string(b), "\r\n"))
	}
	if c.JWTPublicKey != "" {
		b, err := os.ReadFile(c.JWTPublicKey)
		var keys []crypto.PublicKey
		if err == nil {
			keys, err = auth.ParsePublicKeys(b)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("-jwt-public-key: %w", err))
		}
		ac.Keys.PublicKeys = keys
	}
	if c.AllowedOrigins != "" {
		op, err := auth.NewOriginPolicy(splitList(c.AllowedOrigins), c.AllowNoOrigin)
		if err != nil {
			errs = append(errs, fmt.Errorf("-allowed-origins: %w", err))
		}
		ac.Origins = op
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	a, err := auth.New(ac)
	if err != nil {
		return nil, fmt.Errorf("jwt keys: %w", err)
	}
	return a, nil
}

// authHolder is the protocol's Authenticator: it delegates to the current
// auth.Authenticator, which SIGHUP replaces atomically.
type authHolder struct {
	cur  atomic.Pointer[auth.Authenticator]
	jwks *auth.JWKS // kept across reloads (the JWKS refreshes itself)
}

func (h *authHolder) Check(r auth.Request) (auth.Grant, error) { return h.cur.Load().Check(r) }

// Verify implements protocol.Verifier (in-band refresh) with the current
// keys.
func (h *authHolder) Verify(token string) (auth.Grant, error) { return h.cur.Load().Verify(token) }

// reload rebuilds the Authenticator from the files; on error the old one
// stays.
func (h *authHolder) reload(cfg *Config, log *slog.Logger) {
	c := *cfg
	c.jwks = h.jwks
	a, err := c.authenticator()
	if err != nil || a == nil {
		log.Error("auth reload failed; keeping the previous keys", "err", err)
		return
	}
	h.cur.Store(a)
	log.Info("auth reloaded")
}

// securityStats adds the admission, auth and wss counters to /stats.
func securityStats(doc map[string]any, ps *poller.Server, app *pushApp, front *wssCert) {
	st := ps.Stats()
	doc["refused_per_ip"] = st.RefusedPerIP
	doc["refused_rate"] = st.RefusedRate
	doc["token_expired"] = st.Expired
	if app != nil {
		hs := app.handler.Stats()
		doc["rate_limit_closes"] = hs.RateLimitCloses
		doc["auth_refusals"] = hs.AuthRefusals
		doc["forbidden_subscribes"] = hs.Forbidden
		doc["token_refreshes"] = hs.Refreshes
		doc["token_refresh_refused"] = hs.RefreshRefused
		doc["users"] = app.handler.Users()
		if app.auth != nil && app.auth.jwks != nil {
			doc["jwks_refresh_errors"] = app.auth.jwks.RefreshErrors()
			doc["jwks_skipped_keys"] = app.auth.jwks.SkippedKeys()
		}
	}
	if front != nil {
		doc["wss_conns"] = st.TLSConns
		doc["tls_handshake_failures"] = st.TLSFailures
		doc["tls_plaintext_requests"] = st.TLSPlaintext
		doc["tls_handshakes"] = st.TLSHandshakes
		doc["tls_resumed"] = st.TLSResumed
		doc["tls_record_errors"] = st.TLSRecordErrors
		doc["tls_key_rebuilds"] = st.TLSKeyRebuilds
		doc["tls_keys_kept"] = st.TLSKeysKept
	}
}
