package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseConfigSecurityFlags(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	secret := strings.Repeat("k", 32)
	// With a key and no -public, nothing is public.
	c, err := parseConfig([]string{"-jwt-hs256-secret", secret}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.publicPatterns) != 0 {
		t.Errorf("public with a JWT key = %q, want none", c.publicPatterns)
	}
	if a, err := c.authenticator(); err != nil || a == nil || !a.Verifies() {
		t.Errorf("authenticator: %v %v", a, err)
	}
	// ... unless -public (or PUSHD_PUBLIC) says so.
	env := func(k string) (string, bool) {
		if k == "PUSHD_PUBLIC" {
			return "news", true
		}
		if k == "PUSHD_JWT_HS256_SECRET" {
			return secret, true
		}
		return "", false
	}
	c, err = parseConfig(nil, env, io.Discard)
	if err != nil || strings.Join(c.publicPatterns, "|") != "news" || c.JWTHS256Secret != secret {
		t.Errorf("env: %v %q", err, c.publicPatterns)
	}
	// No key: unchanged behaviour, no authenticator.
	c, err = parseConfig(nil, noEnv, io.Discard)
	if a, _ := c.authenticator(); err != nil || a != nil || strings.Join(c.publicPatterns, "|") != "*" {
		t.Errorf("defaults: %v %v %q", err, a, c.publicPatterns)
	}

	dir := t.TempDir()
	notPEM := filepath.Join(dir, "x.pem")
	if err := os.WriteFile(notPEM, []byte("nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"-jwt-hs256-secret", "short"}, "at least 32 bytes"},
		{[]string{"-jwt-hs256-secret", secret, "-jwt-hs256-secret-file", notPEM}, "exclusive"},
		{[]string{"-jwt-public-key", notPEM}, "-jwt-public-key"},
		{[]string{"-jwt-public-key", filepath.Join(dir, "missing.pem")}, "no such file"},
		{[]string{"-auth-required"}, "-auth-required needs a JWT key"},
		{[]string{"-allowed-origins", "example.com"}, "-allowed-origins"},
		{[]string{"-connect-rate", "-1"}, "-connect-rate"},
		{[]string{"-max-conns-per-ip", "-2"}, "-max-conns-per-ip"},
		{[]string{"-tls-listen", "127.0.0.1:0"}, "go together"},
		{[]string{"-tls-min-version", "1.1"}, "-tls-min-version must be 1.2 or 1.3"},
		{[]string{"-tls-listen", "127.0.0.1:0", "-tls-cert", notPEM, "-tls-key", notPEM}, "-tls-cert/-tls-key"},
		{[]string{"-admin-listen", "0.0.0.0:9090"}, "-admin-api-key"},
		{[]string{"-poller", "netpoll", "-tls-listen", "127.0.0.1:0", "-tls-cert", notPEM, "-tls-key", notPEM}, "-tls-listen needs -poller lean"},
		// -echo has no /publish, but /stats, /metrics and pprof need the key too.
		{[]string{"-admin-listen", "0.0.0.0:9090", "-echo"}, "-admin-api-key"},
		{[]string{"-admin-api-key", "k", "-admin-api-key-file", notPEM}, "exclusive"},
		{[]string{"-jwt-jwks-url", "ftp://idp/jwks"}, "-jwt-jwks-url"},
		{[]string{"-jwt-jwks-url", "https://idp/jwks", "-jwt-jwks-refresh", "0s"}, "-jwt-jwks-refresh"},
		{[]string{"-admin-api-key-file", filepath.Join(dir, "missing-key")}, "-admin-api-key-file"},
	} {
		_, err := parseConfig(bad.args, noEnv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: %v, want an error with %q", bad.args, err, bad.want)
		}
	}
	if _, err := parseConfig([]string{"-admin-listen", "0.0.0.0:9090", "-admin-api-key", "k"}, noEnv, io.Discard); err != nil {
		t.Errorf("non-loopback admin with a key: %v", err)
	}
	if _, err := parseConfig([]string{"-admin-listen", "0.0.0.0:9090", "-admin-api-key-file", notPEM}, noEnv, io.Discard); err != nil {
		t.Errorf("non-loopback admin with a key file: %v", err)
	}
}
