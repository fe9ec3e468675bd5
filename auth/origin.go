package auth

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// OriginPolicy is the Origin allowlist (RFC 6454 origins). Immutable.
//
// Patterns are full origins, scheme://host[:port]: exact
// ("https://app.example.com") or a wildcard over subdomains
// ("https://*.example.com" matches https://a.example.com and
// https://a.b.example.com, never https://example.com or
// https://evil-example.com). "*" allows every origin. Scheme and host
// compare case-insensitively; the port must match exactly (an absent port
// is the scheme's default only in that it must be absent on both sides).
type OriginPolicy struct {
	any          bool
	exact        map[string]bool
	wildcards    []wildcard
	allowMissing bool
}

type wildcard struct {
	scheme, suffix, port string // suffix ".example.com"
}

// NewOriginPolicy builds a policy from patterns. allowMissing admits
// requests without an Origin header (non-browser clients).
func NewOriginPolicy(patterns []string, allowMissing bool) (*OriginPolicy, error) {
	p := &OriginPolicy{exact: map[string]bool{}, allowMissing: allowMissing}
	var errs []error
	for _, pat := range patterns {
		if pat == "*" {
			p.any = true
			continue
		}
		scheme, host, port, err := splitOrigin(pat)
		if err != nil {
			errs = append(errs, fmt.Errorf("origin pattern %q: %w", pat, err))
			continue
		}
		if rest, ok := strings.CutPrefix(host, "*."); ok {
			if rest == "" || strings.Contains(rest, "*") {
				errs = append(errs, fmt.Errorf("origin pattern %q: bad wildcard", pat))
				continue
			}
			p.wildcards = append(p.wildcards, wildcard{scheme: scheme, suffix: "." + rest, port: port})
			continue
		}
		if strings.Contains(host, "*") {
			errs = append(errs, fmt.Errorf("origin pattern %q: '*' only as the first label", pat))
			continue
		}
		p.exact[joinOrigin(scheme, host, port)] = true
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return p, nil
}

// Allow reports whether a request with this Origin header value ("" when
// absent) may connect.
func (p *OriginPolicy) Allow(origin string) bool {
	if origin == "" {
		return p.allowMissing
	}
	if p.any {
		return true
	}
	scheme, host, port, err := splitOrigin(origin)
	if err != nil {
		return false
	}
	if p.exact[joinOrigin(scheme, host, port)] {
		return true
	}
	for _, w := range p.wildcards {
		if w.scheme == scheme && w.port == port && len(host) > len(w.suffix) && strings.HasSuffix(host, w.suffix) {
			return true
		}
	}
	return false
}

// splitOrigin parses scheme://host[:port] with nothing else (no path,
// user info, query). Scheme and host come back lower-cased.
func splitOrigin(s string) (scheme, host, port string, err error) {
	if len(s) > 2048 {
		return "", "", "", errors.New("too long")
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", "", "", err
	}
	if u.Scheme == "" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", "", "", errors.New("want scheme://host[:port]")
	}
	return strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port(), nil
}

func joinOrigin(scheme, host, port string) string {
	if port == "" {
		return scheme + "://" + host
	}
	return scheme + "://" + host + ":" + port
}
