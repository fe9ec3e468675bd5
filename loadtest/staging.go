package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Staging: what loading a real deployment needs beyond ws://, namely
// wss:// targets (a CA, or -insecure, and SNI) and tokens (one for
// everybody, one per connection from a file, or one signed here per
// connection so that each virtual user is its own user and may
// subscribe to its own personal channel).

// stagingOptions are the TLS and token flags.
type stagingOptions struct {
	ca, sni         string
	insecure        bool
	token           string
	tokenFile       string
	jwtSecretFile   string
	jwtClaims       string
	jwtTTL          time.Duration
	tokens          []string // -token-file's lines
	secret          []byte   // -jwt-hs256-secret-file's content
	caPool          *x509.CertPool
	anyTLS, anyAuth bool
}

// defaultClaims is -jwt-claims' default: user i may read its personal
// channel and the group channels.
const defaultClaims = `{"sub":"{i}","exp":{exp},"channels":["{prefix}u:{i}","{prefix}g:*"]}`

func (s *stagingOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&s.ca, "ca", "", "wss: PEM file of CA certificates to trust (default: the system roots)")
	fs.BoolVar(&s.insecure, "insecure", false, "wss: do not verify the server certificate")
	fs.StringVar(&s.sni, "sni", "", "wss: TLS server name (SNI and verification; default: the target's host)")
	fs.StringVar(&s.token, "token", "", "send this token (?token=) on every connection")
	fs.StringVar(&s.tokenFile, "token-file", "", "file of tokens, one per line: connection i sends line i mod lines")
	fs.StringVar(&s.jwtSecretFile, "jwt-hs256-secret-file", "", "sign an HS256 token per connection with the secret in this file (see -jwt-claims)")
	fs.StringVar(&s.jwtClaims, "jwt-claims", defaultClaims, "with -jwt-hs256-secret-file: claims template; {i} is the connection index, {exp} now + -jwt-ttl (Unix seconds), {prefix} -prefix")
	fs.DurationVar(&s.jwtTTL, "jwt-ttl", time.Hour, "with -jwt-hs256-secret-file: token lifetime")
}

// validate loads the files and checks the combinations.
func (s *stagingOptions) validate(targets []string) []error {
	var errs []error
	for _, t := range targets {
		if strings.HasPrefix(t, "wss://") {
			s.anyTLS = true
		}
	}
	n := 0
	for _, v := range []string{s.token, s.tokenFile, s.jwtSecretFile} {
		if v != "" {
			n++
		}
	}
	if n > 1 {
		errs = append(errs, errors.New("-token, -token-file and -jwt-hs256-secret-file are exclusive"))
	}
	s.anyAuth = n > 0
	if s.tokenFile != "" {
		b, err := os.ReadFile(s.tokenFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("-token-file: %w", err))
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				s.tokens = append(s.tokens, l)
			}
		}
		if err == nil && len(s.tokens) == 0 {
			errs = append(errs, fmt.Errorf("-token-file %s holds no token", s.tokenFile))
		}
	}
	if s.jwtSecretFile != "" {
		b, err := os.ReadFile(s.jwtSecretFile)
		s.secret = []byte(strings.TrimRight(string(b), "\r\n"))
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("-jwt-hs256-secret-file: %w", err))
		case len(s.secret) < 32:
			errs = append(errs, fmt.Errorf("-jwt-hs256-secret-file: the secret must be at least 32 bytes (got %d)", len(s.secret)))
		}
		if !strings.Contains(s.jwtClaims, "{i}") {
			errs = append(errs, errors.New("-jwt-claims must contain {i}: every connection is its own user"))
		}
		if s.jwtTTL <= 0 {
			errs = append(errs, fmt.Errorf("-jwt-ttl must be positive (got %v)", s.jwtTTL))
		}
	}
	if s.ca != "" {
		b, err := os.ReadFile(s.ca)
		s.caPool = x509.NewCertPool()
		if err != nil {
			errs = append(errs, fmt.Errorf("-ca: %w", err))
		} else if !s.caPool.AppendCertsFromPEM(b) {
			errs = append(errs, fmt.Errorf("-ca %s: no PEM certificate", s.ca))
		}
	}
	if (s.ca != "" || s.insecure || s.sni != "") && !s.anyTLS {
		errs = append(errs, errors.New("-ca, -insecure and -sni need a wss:// target"))
	}
	if s.ca != "" && s.insecure {
		errs = append(errs, errors.New("-ca and -insecure are exclusive"))
	}
	return errs
}

// args returns the flags a worker process needs again.
func (s *stagingOptions) args() []string {
	var a []string
	add := func(name, v string) {
		if v != "" {
			a = append(a, "-"+name, v)
		}
	}
	add("ca", s.ca)
	add("sni", s.sni)
	add("token", s.token)
	add("token-file", s.tokenFile)
	add("jwt-hs256-secret-file", s.jwtSecretFile)
	if s.jwtSecretFile != "" {
		a = append(a, "-jwt-claims", s.jwtClaims, "-jwt-ttl", s.jwtTTL.String())
	}
	if s.insecure {
		a = append(a, "-insecure")
	}
	return a
}

// clientTLS is the configuration of wss connections to host (one per
// loop: its session cache makes reconnects resume).
func (s *stagingOptions) clientTLS(host string) *tls.Config {
	name := s.sni
	if name == "" {
		name = host
	}
	return &tls.Config{
		RootCAs: s.caPool, InsecureSkipVerify: s.insecure, ServerName: name,
		NextProtos: []string{"http/1.1"}, ClientSessionCache: tls.NewLRUClientSessionCache(16),
	}
}

// appendToken appends connection gid's token (nothing without auth).
func (s *stagingOptions) appendToken(dst []byte, gid uint32, prefix string) []byte {
	switch {
	case s.token != "":
		return append(dst, s.token...)
	case len(s.tokens) > 0:
		return append(dst, s.tokens[int(gid)%len(s.tokens)]...)
	case s.secret != nil:
		return signHS256(dst, s.secret, s.claims(gid, prefix))
	}
	return dst
}

// claims fills the template for connection gid.
func (s *stagingOptions) claims(gid uint32, prefix string) string {
	exp := strconv.FormatInt(time.Now().Add(s.jwtTTL).Unix(), 10)
	return strings.NewReplacer("{i}", strconv.FormatUint(uint64(gid), 10), "{exp}", exp, "{prefix}", prefix).Replace(s.jwtClaims)
}

// signHS256 appends a compact JWS (RFC 7515) of claims, HMAC-SHA256.
func signHS256(dst, secret []byte, claims string) []byte {
	enc := base64.RawURLEncoding
	start := len(dst)
	dst = append(dst, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."...) // {"alg":"HS256","typ":"JWT"}
	dst = enc.AppendEncode(dst, []byte(claims))
	m := hmac.New(sha256.New, secret)
	m.Write(dst[start:])
	dst = append(dst, '.')
	return enc.AppendEncode(dst, m.Sum(nil))
}

// tlsLine summarizes the wss handshakes: versions seen and the share
// resumed from a session ticket ("" without wss).
func (r *Report) tlsLine() string {
	var total uint64
	var parts []string
	for k, v := range r.TLS {
		if k != "resumed" {
			total += v
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
	}
	if total == 0 {
		return ""
	}
	slices.Sort(parts)
	return fmt.Sprintf("%d handshakes (%s), resumed %d (%.1f%%)", total, strings.Join(parts, ", "), r.TLS["resumed"], 100*float64(r.TLS["resumed"])/float64(total))
}
