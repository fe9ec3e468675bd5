package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeFile writes body to a temp file and returns its path.
func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// TestConfigPrecedence: defaults < file < PUSHD_* < flags, key by key;
// -config beats PUSHD_CONFIG; lists may be YAML sequences.
func TestConfigPrecedence(t *testing.T) {
	file := writeFile(t, "pushd.yaml", `
# a comment
max-frame: 100
max-message: 1000
listen: 127.0.0.1:7000
public: [news, "login:*"]
policy:
  - game:*=conflate
  - feed:*=drop
drain-duration: 3s
reconnect-jitter: 250ms
connect-rate: 2.5
reuseport: true
`)
	other := writeFile(t, "other.yaml", "max-frame: 7\n")
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		frame    int64
		listen   string
		usedFile string
	}{
		{"file", []string{"-config", file}, nil, 100, "127.0.0.1:7000", file},
		{"env over file", []string{"-config", file}, map[string]string{"PUSHD_MAX_FRAME": "200"}, 200, "127.0.0.1:7000", file},
		{"flag over env", []string{"-config", file, "-max-frame", "300"}, map[string]string{"PUSHD_MAX_FRAME": "200"}, 300, "127.0.0.1:7000", file},
		{"PUSHD_CONFIG", nil, map[string]string{"PUSHD_CONFIG": file, "PUSHD_LISTEN": "127.0.0.1:7001"}, 100, "127.0.0.1:7001", file},
		{"-config over PUSHD_CONFIG", []string{"-config", other}, map[string]string{"PUSHD_CONFIG": file}, 7, "127.0.0.1:8080", other},
		{"no file", nil, nil, 1 << 20, "127.0.0.1:8080", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(tc.args, envOf(tc.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.MaxFrame != tc.frame || c.Listen != tc.listen || c.ConfigFile != tc.usedFile {
				t.Errorf("max-frame %d listen %s file %q, want %d %s %q", c.MaxFrame, c.Listen, c.ConfigFile, tc.frame, tc.listen, tc.usedFile)
			}
			if tc.usedFile == file {
				if c.MaxMessage != 1000 || !c.ReusePort || c.DrainDuration != 3*time.Second || c.ReconnectJitter != 250*time.Millisecond || c.ConnectRate != 2.5 {
					t.Errorf("file values not applied: %+v", c)
				}
				if strings.Join(c.publicPatterns, "|") != "news|login:*" || len(c.policyRules) != 2 {
					t.Errorf("lists: public %q policy %+v", c.publicPatterns, c.policyRules)
				}
			}
		})
	}
	// public in the file counts as given: with a JWT key it stays.
	f := writeFile(t, "jwt.yaml", "public: news\njwt-hs256-secret: "+strings.Repeat("s", 32)+"\n")
	c, err := parseConfig([]string{"-config", f}, envOf(nil), io.Discard)
	if err != nil || strings.Join(c.publicPatterns, "|") != "news" {
		t.Errorf("public from the file with a JWT key: %q %v", c.publicPatterns, err)
	}
	// An empty file is the defaults.
	if _, err := parseConfig([]string{"-config", writeFile(t, "empty.yaml", "")}, envOf(nil), io.Discard); err != nil {
		t.Errorf("empty file: %v", err)
	}
}

// TestConfigFileErrors: every problem of the file, the environment and
// the values is reported at once, file errors with their line.
func TestConfigFileErrors(t *testing.T) {
	file := writeFile(t, "bad.yaml", `max-frame: 12
max-frames: 3
listen: [a, b]
handshake-timeout: 5x
config: other.yaml
workers: {n: 1}
max-frame: 13
history-size: -1
`)
	_, err := parseConfig([]string{"-config", file, "-chunk-size", "0"}, envOf(map[string]string{"PUSHD_MAX_PENDING": "lots"}), io.Discard)
	if err == nil {
		t.Fatal("bad file accepted")
	}
	for _, want := range []string{
		`bad.yaml:2: unknown key "max-frames"`,
		`bad.yaml:3: listen: want a single value`,
		`bad.yaml:4: handshake-timeout: "5x"`,
		`bad.yaml:5: unknown key "config"`,
		`bad.yaml:6: workers: want a single value`,
		`bad.yaml:7: "max-frame" given twice`,
		`PUSHD_MAX_PENDING="lots"`,
		`-history-size must not be negative`,
		`-chunk-size must be at least 1`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	for _, bad := range []string{"- a\n- b\n", "max-frame: [1\n"} {
		if _, err := parseConfig([]string{"-config", writeFile(t, "x.yaml", bad)}, envOf(nil), io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := parseConfig([]string{"-config", filepath.Join(t.TempDir(), "missing.yaml")}, envOf(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	for _, args := range [][]string{{"-drain-duration", "-1s"}, {"-drain-delay", "-1s"}, {"-reconnect-jitter", "2h"}} {
		if _, err := parseConfig(args, envOf(nil), io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

// TestPrintConfigRoundTrip: -print-config writes a file that loads back
// into the same configuration, and never prints a secret value.
func TestPrintConfigRoundTrip(t *testing.T) {
	secret := strings.Repeat("S", 40)
	args := []string{
		"-max-frame", "4096", "-public", "news,login:*", "-policy", "feed:*=drop", "-drain-duration", "1m30s",
		"-connect-rate", "2.5", "-reuseport", "-allowed-origins", "https://a.example", "-log-level", "warn",
		"-redis", "redis://user:hunter2@127.0.0.1:6379/1", "-admin-api-key", "key-" + secret, "-jwt-hs256-secret", secret,
	}
	c, err := parseConfig(args, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := printConfig(&out, c); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, leak := range []string{secret, "hunter2"} {
		if strings.Contains(text, leak) {
			t.Fatalf("-print-config printed a secret (%s):\n%s", leak, text)
		}
	}
	for _, want := range []string{"# admin-api-key: <redacted>", "# jwt-hs256-secret: <redacted>", "redis: redis://user:xxxxx@127.0.0.1:6379/1", "drain-duration: 1m30s", "connect-rate: 2.5"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Load it back (secrets aside; the redacted Redis URL differs only in
	// the password).
	back, err := parseConfig([]string{"-config", writeFile(t, "printed.yaml", text)}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, text)
	}
	c.flags.VisitAll(func(f *flag.Flag) {
		if notFileKey(f.Name) || secretKey(f.Name) || f.Name == "redis" {
			return
		}
		if got, want := back.flags.Lookup(f.Name).Value.String(), f.Value.String(); got != want {
			t.Errorf("%s: %q after the round trip, want %q", f.Name, got, want)
		}
	})
	if back.Redis != "redis://user:xxxxx@127.0.0.1:6379/1" {
		t.Errorf("redis %q", back.Redis)
	}
}

func TestDrainStep(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		n    int
		want time.Duration
	}{
		{10 * time.Second, 10000, time.Millisecond}, // spread over the whole duration
		{10 * time.Second, 100000, 100 * time.Microsecond},
		{10 * time.Second, 50, 10 * time.Millisecond}, // small: 100/s floor, done in 0.5 s
		{0, 1000, 0}, // all at once
		{10 * time.Second, 0, 0},
	} {
		if got := drainStep(tc.d, tc.n); got != tc.want {
			t.Errorf("drainStep(%v, %d) = %v, want %v", tc.d, tc.n, got, tc.want)
		}
	}
}

// TestRateLimitedHandler: one message prints at most n lines per period;
// the next line after a suppressed stretch is preceded by the count;
// other messages are not affected.
func TestRateLimitedHandler(t *testing.T) {
	var buf bytes.Buffer
	h := newRateLimitedHandler(slog.NewTextHandler(&buf, nil), 3, time.Second)
	log := slog.New(h).With("component", "x")
	t0 := time.Unix(1000, 0)
	emit := func(at time.Duration, msg string) {
		r := slog.NewRecord(t0.Add(at), slog.LevelWarn, msg, 0)
		if err := log.Handler().Handle(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		emit(time.Duration(i)*time.Millisecond, "accept failed")
	}
	emit(5*time.Millisecond, "other")
	emit(1100*time.Millisecond, "accept failed")
	out := buf.String()
	if n := strings.Count(out, `msg="accept failed"`); n != 4 {
		t.Errorf("%d accept lines, want 3 + 1 after the window:\n%s", n, out)
	}
	if !strings.Contains(out, `msg="log lines suppressed" component=x message="accept failed" count=7`) || !strings.Contains(out, `msg=other`) {
		t.Errorf("missing suppression summary or other message:\n%s", out)
	}
	if !strings.Contains(out, "component=x") {
		t.Errorf("WithAttrs lost:\n%s", out)
	}
}
