package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Defaults of JWKSConfig.
const (
	DefaultJWKSRefresh    = 5 * time.Minute
	DefaultJWKSUnknownKID = 10 * time.Second
)

// JWKSConfig configures a JWKS key source.
type JWKSConfig struct {
	// URL of the JWK Set (https; http only for tests on loopback).
	URL string
	// Client fetches it (custom roots in tests); nil: a client with a
	// 10 s timeout.
	Client *http.Client
	// Refresh is the periodic refresh interval (zero: DefaultJWKSRefresh).
	Refresh time.Duration
	// UnknownKID is the minimum time between refreshes triggered by a
	// token with an unknown kid (zero: DefaultJWKSUnknownKID).
	UnknownKID time.Duration
	// Logger receives refresh failures; nil discards them.
	Logger *slog.Logger
}

// JWKS is a cached, refreshed JWK Set (RS256, ES256, EdDSA keys; several
// may be live during a rotation). It fetches the set once at start, then
// every Refresh, and again (rate-limited) when a token names an unknown
// kid. A failed refresh keeps the cached keys and counts in
// RefreshErrors. Its refresh goroutine ends with the ctx given to
// NewJWKS. Safe for concurrent use.
type JWKS struct {
	kf       keyfunc.Keyfunc
	failures atomic.Uint64
	skipped  atomic.Uint64
}

// SkippedKeys counts keys dropped from fetched sets because they did not
// parse (one malformed key must not take the whole set down).
func (j *JWKS) SkippedKeys() uint64 { return j.skipped.Load() }

// maxJWKSBytes bounds a fetched JWK Set.
const maxJWKSBytes = 1 << 20

// skipBadKeys is the JWKS client's transport: it drops every key of a
// fetched set that does not parse, with a log line, before the set
// reaches the key cache (which would refuse the whole set).
type skipBadKeys struct {
	next    http.RoundTripper
	log     *slog.Logger
	skipped *atomic.Uint64
}

func (s *skipBadKeys) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := s.next.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("JWK Set larger than %d bytes", maxJWKSBytes)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("JWK Set: %w", err)
	}
	good := set.Keys[:0]
	for _, raw := range set.Keys {
		if _, err := keyfunc.NewJWKJSON(raw); err != nil {
			s.skipped.Add(1)
			s.log.Warn("JWKS: skipping a key that does not parse", "url", r.URL.String(), "err", err)
			continue
		}
		good = append(good, raw)
	}
	out, err := json.Marshal(map[string]any{"keys": good})
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// NewJWKS starts the key source. The first fetch must succeed (a server
// that cannot verify any token should not start).
func NewJWKS(ctx context.Context, cfg JWKSConfig) (*JWKS, error) {
	if err := ValidJWKSURL(cfg.URL); err != nil {
		return nil, err
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultJWKSRefresh
	}
	if cfg.UnknownKID <= 0 {
		cfg.UnknownKID = DefaultJWKSUnknownKID
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	j := &JWKS{}
	client := *cfg.Client
	base := client.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	client.Transport = &skipBadKeys{next: base, log: log, skipped: &j.skipped}
	cfg.Client = &client
	noErr := false
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.URL}, keyfunc.Override{
		Client:                    cfg.Client,
		HTTPTimeout:               10 * time.Second,
		NoErrorReturnFirstHTTPReq: &noErr,
		// A token with an unknown kid waits at most this long for the
		// rate limiter; it runs on a connection's upgrade.
		RateLimitWaitMax:  100 * time.Millisecond,
		RefreshInterval:   cfg.Refresh,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(cfg.UnknownKID), 1),
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				j.failures.Add(1)
				log.Warn("JWKS refresh failed; keeping the cached keys", "url", u, "err", err)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: JWKS %s: %w", ErrConfig, cfg.URL, err)
	}
	j.kf = kf
	return j, nil
}

// ValidJWKSURL checks a JWKS URL's shape.
func ValidJWKSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%w: JWKS URL %q: want https://host/path", ErrConfig, s)
	}
	return nil
}

// RefreshErrors counts failed refreshes since start.
func (j *JWKS) RefreshErrors() uint64 { return j.failures.Load() }

// key returns the verification key for t (by kid and alg).
func (j *JWKS) key(t *jwt.Token) (any, error) {
	k, err := j.kf.Keyfunc(t)
	if err != nil {
		return nil, errors.Join(jwt.ErrTokenUnverifiable, err)
	}
	return k, nil
}
