package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// KeyConfig holds the verification keys and the claim requirements.
type KeyConfig struct {
	// HS256Secret enables HS256 with this shared secret (at least 32 bytes).
	HS256Secret []byte
	// PublicKeys enable RS256 (RSA keys, at least 2048 bits), ES256 (ECDSA
	// P-256) and EdDSA (Ed25519). Parse them with ParsePublicKeys.
	PublicKeys []crypto.PublicKey
	// Audience, when set, must be one of the token's aud values.
	Audience string
	// Issuer, when set, must equal the token's iss.
	Issuer string
	// Leeway tolerates clock skew on exp/nbf/iat.
	Leeway time.Duration
	// Now replaces the clock (tests); nil is time.Now.
	Now func() time.Time
	// JWKS, when set, supplies RS256, ES256 and EdDSA keys by kid (next to
	// PublicKeys, which are tried when the JWKS has no key for a token).
	JWKS *JWKS
}

// Enabled reports whether any key is configured.
func (k *KeyConfig) Enabled() bool {
	return len(k.HS256Secret) > 0 || len(k.PublicKeys) > 0 || k.JWKS != nil
}

// Claims are the verified claims pushd uses.
type Claims struct {
	Subject  string
	Expires  time.Time
	Channels []string
}

// tokenClaims is the JWT payload shape.
type tokenClaims struct {
	jwt.RegisteredClaims
	Channels []string `json:"channels"`
}

// verifier checks tokens against the configured keys. Immutable.
type verifier struct {
	parser *jwt.Parser
	keys   map[string]jwt.VerificationKeySet // by alg
	jwks   *JWKS                             // nil: none
}

// newVerifier builds the verifier. The parser accepts only the algorithms
// of the configured keys (jwt.WithValidMethods), so "alg":"none" and an
// HS256 token signed with a public key (algorithm confusion) never reach a
// signature check with the wrong key.
func newVerifier(k KeyConfig) (*verifier, error) {
	v := &verifier{keys: map[string]jwt.VerificationKeySet{}}
	add := func(alg string, key jwt.VerificationKey) {
		set := v.keys[alg]
		set.Keys = append(set.Keys, key)
		v.keys[alg] = set
	}
	var errs []error
	if len(k.HS256Secret) > 0 {
		if len(k.HS256Secret) < 32 {
			errs = append(errs, fmt.Errorf("HS256 secret must be at least 32 bytes (got %d)", len(k.HS256Secret)))
		}
		add(jwt.SigningMethodHS256.Alg(), slices.Clone(k.HS256Secret))
	}
	for i, pk := range k.PublicKeys {
		switch key := pk.(type) {
		case *rsa.PublicKey:
			if key.N.BitLen() < 2048 {
				errs = append(errs, fmt.Errorf("public key %d: RSA key of %d bits, want at least 2048", i, key.N.BitLen()))
			}
			add(jwt.SigningMethodRS256.Alg(), key)
		case *ecdsa.PublicKey:
			if key.Curve != elliptic.P256() {
				errs = append(errs, fmt.Errorf("public key %d: ECDSA curve %s, want P-256 (ES256)", i, key.Curve.Params().Name))
			}
			add(jwt.SigningMethodES256.Alg(), key)
		case ed25519.PublicKey:
			add(jwt.SigningMethodEdDSA.Alg(), key)
		default:
			errs = append(errs, fmt.Errorf("public key %d: unsupported type %T", i, pk))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	methods := make([]string, 0, len(v.keys)+3)
	for alg := range v.keys {
		methods = append(methods, alg)
	}
	if k.JWKS != nil {
		v.jwks = k.JWKS
		for _, alg := range jwksAlgs {
			if _, ok := v.keys[alg]; !ok {
				methods = append(methods, alg)
			}
		}
	}
	slices.Sort(methods)
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(k.Leeway),
	}
	if k.Audience != "" {
		opts = append(opts, jwt.WithAudience(k.Audience))
	}
	if k.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(k.Issuer))
	}
	if k.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(k.Now))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// jwksAlgs are the algorithms a JWKS key may verify (never HS256: a
// public JWK used as an HMAC secret is the algorithm-confusion attack).
var jwksAlgs = []string{"RS256", "ES256", "EdDSA"}

// verify checks tok and returns its claims, or an *Error (401) saying why
// not in a few words.
func (v *verifier) verify(tok string) (Claims, error) {
	var tc tokenClaims
	_, err := v.parser.ParseWithClaims(tok, &tc, func(t *jwt.Token) (any, error) {
		if v.jwks != nil && slices.Contains(jwksAlgs, t.Method.Alg()) {
			k, err := v.jwks.key(t)
			if err == nil {
				return k, nil
			}
			if _, ok := v.keys[t.Method.Alg()]; !ok {
				return nil, err
			}
		}
		set, ok := v.keys[t.Method.Alg()]
		if !ok {
			return nil, jwt.ErrTokenSignatureInvalid
		}
		return set, nil
	})
	if err != nil {
		return Claims{}, unauthorized(fmt.Errorf("%w: %w", ErrInvalidToken, err), tokenReason(err))
	}
	if tc.Subject == "" {
		return Claims{}, unauthorized(ErrInvalidToken, "token has no sub")
	}
	return Claims{Subject: tc.Subject, Expires: tc.ExpiresAt.Time, Channels: tc.Channels}, nil
}

// tokenReason turns a jwt error into the short reason sent to the client.
func tokenReason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenUnverifiable), errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "invalid token signature or algorithm"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token lacks a required claim"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong token audience"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong token issuer"
	}
	return "invalid token"
}

// ParsePublicKeys parses every PEM block of b: PUBLIC KEY (PKIX: RSA,
// ECDSA, Ed25519), RSA PUBLIC KEY (PKCS #1) or CERTIFICATE (its key).
// Other blocks (private keys!) are refused.
func ParsePublicKeys(b []byte) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		var (
			key crypto.PublicKey
			err error
		)
		switch blk.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(blk.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(blk.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(blk.Bytes); err == nil {
				key = cert.PublicKey
			}
		default:
			err = fmt.Errorf("PEM block %q is not a public key", blk.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no PEM public key found", ErrConfig)
	}
	return keys, nil
}
