package auth

import (
	"net/http"
	"time"
)

// Config configures an Authenticator. The zero value authenticates nobody
// and checks nothing: every request is anonymous and allowed.
type Config struct {
	// Keys verify tokens. With no key, tokens are ignored (not verified,
	// not required) and every connection is anonymous.
	Keys KeyConfig
	// Required refuses (401) requests without a token when keys are set.
	Required bool
	// Origins is the Origin allowlist; nil allows every origin.
	Origins *OriginPolicy
}

// Authenticator checks upgrade requests. Immutable; safe for concurrent
// use.
type Authenticator struct {
	v        *verifier // nil: no keys
	required bool
	origins  *OriginPolicy
}

// New validates cfg and builds an Authenticator.
func New(cfg Config) (*Authenticator, error) {
	a := &Authenticator{required: cfg.Required, origins: cfg.Origins}
	if cfg.Keys.Enabled() {
		v, err := newVerifier(cfg.Keys)
		if err != nil {
			return nil, err
		}
		a.v = v
	}
	return a, nil
}

// Verifies reports whether tokens are checked (keys are configured).
func (a *Authenticator) Verifies() bool { return a.v != nil }

// Request is what Check needs of an upgrade request.
type Request struct {
	URI           string
	Origin        string
	Authorization string
	Protocols     []string
}

// Grant is what a connection was allowed. The zero Grant is anonymous
// (public channels only, no expiry).
type Grant struct {
	// Subject is the token's sub ("" when anonymous).
	Subject string
	// Expires is the token's exp (zero when anonymous): the connection is
	// closed with 4003 then.
	Expires time.Time
	// Channels are the channel patterns the token allows.
	Channels []string
	// Source says where the token was found.
	Source Source
}

// PersonalChannel is the channel every authenticated connection is
// subscribed to: "user:<sub>" ("" when anonymous).
func (g *Grant) PersonalChannel() string {
	if g.Subject == "" {
		return ""
	}
	return "user:" + g.Subject
}

// Verify checks a bare token, as sent in an in-band refresh: the same
// keys, algorithms, audience, issuer and leeway as Check. Errors are
// *Error values (401); with no keys configured it refuses every token.
func (a *Authenticator) Verify(token string) (Grant, error) {
	if a.v == nil {
		return Grant{}, unauthorized(ErrInvalidToken, "tokens are not verified on this server")
	}
	if token == "" {
		return Grant{}, unauthorized(ErrMalformedRequest, "empty token")
	}
	c, err := a.v.verify(token)
	if err != nil {
		return Grant{}, err
	}
	return Grant{Subject: c.Subject, Expires: c.Expires, Channels: c.Channels, Source: SourceRefresh}, nil
}

// Check decides an upgrade request: the Origin first (403), then the
// token (401). Errors are *Error values carrying the HTTP status.
func (a *Authenticator) Check(r Request) (Grant, error) {
	if a.origins != nil && !a.origins.Allow(r.Origin) {
		reason := "origin not allowed"
		if r.Origin == "" {
			reason = "Origin header required"
		}
		return Grant{}, &Error{Status: http.StatusForbidden, Reason: reason, Err: ErrOrigin}
	}
	if a.v == nil {
		return Grant{}, nil
	}
	tok, src, err := ExtractToken(r.URI, r.Authorization, r.Protocols)
	if err != nil {
		return Grant{}, err
	}
	if src == SourceNone {
		if a.required {
			return Grant{}, unauthorized(ErrNoToken, "token required")
		}
		return Grant{}, nil
	}
	c, err := a.v.verify(tok)
	if err != nil {
		return Grant{}, err
	}
	return Grant{Subject: c.Subject, Expires: c.Expires, Channels: c.Channels, Source: src}, nil
}
