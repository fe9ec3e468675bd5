package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseConfigRedisFlags(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	c, err := parseConfig([]string{"-redis", "redis://127.0.0.1:6379/2"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o := c.redis.url; o == nil || o.Addr != "127.0.0.1:6379" || o.DB != 2 || o.MaxRetries != -1 || o.TLSConfig != nil {
		t.Fatalf("redis options %+v", o)
	}
	c, err = parseConfig([]string{"-redis-cluster", "127.0.0.1:7000, 127.0.0.1:7001"}, noEnv, io.Discard)
	if err != nil || strings.Join(c.redis.clusterAddrs, "|") != "127.0.0.1:7000|127.0.0.1:7001" {
		t.Fatalf("cluster %+v %v", c.redis, err)
	}
	env := func(k string) (string, bool) { return "redis://127.0.0.1:1/0", k == "PUSHD_REDIS" }
	if c, err = parseConfig(nil, env, io.Discard); err != nil || c.redis.url == nil {
		t.Fatalf("PUSHD_REDIS: %v", err)
	}
	if c, err = parseConfig(nil, noEnv, io.Discard); err != nil || c.redis.enabled() {
		t.Fatalf("no Redis flag: %+v %v", c.redis, err)
	}
	for _, args := range [][]string{
		{"-redis", "http://x"},
		{"-redis", "redis://127.0.0.1:1/0", "-redis-cluster", "127.0.0.1:2"},
		{"-redis-sentinel", "m@127.0.0.1:1", "-redis-cluster", "127.0.0.1:2"},
		{"-redis-cluster", "nope"},
		{"-redis-cluster", " , "},
		{"-redis-sentinel", "127.0.0.1:26379"},
		{"-redis-sentinel", "m@"},
		{"-redis-sentinel", "@127.0.0.1:26379"},
		{"-redis-sentinel", "m@nope"},
		{"-redis-password", "x"},
		{"-redis", "redis://127.0.0.1:1/0", "-redis-password", "x", "-redis-password-file", "/dev/null"},
		{"-redis", "redis://127.0.0.1:1/0", "-redis-password-file", "/nonexistent"},
		{"-redis", "redis://127.0.0.1:1/0", "-redis-username", "pushd"},
		{"-redis", "redis://127.0.0.1:1/0", "-redis-tls-ca", "/etc/hostname"},
		{"-redis", "redis://127.0.0.1:1/0", "-redis-tls", "-redis-tls-ca", "/etc/hostname"},
		{"-redis", "redis://127.0.0.1:1/0", "-redis-tls", "-redis-tls-cert", "x.pem"},
		{"-redis", "redis://127.0.0.1:1/0", "-redis-sentinel-password", "x"},
	} {
		if _, err := parseConfig(args, noEnv, io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

// TestParseConfigRedisSentinelACLTLS: -redis-sentinel, the ACL user and
// password and TLS reach the client the same way from flags, the
// environment and the config file, secrets from a file or the environment.
func TestParseConfigRedisSentinelACLTLS(t *testing.T) {
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noEnv := func(string) (string, bool) { return "", false }

	c, err := parseConfig([]string{"-redis-sentinel", "mymaster@127.0.0.1:26379, 127.0.0.1:26380",
		"-redis-username", "pushd", "-redis-password-file", pass,
		"-redis-tls", "-redis-tls-server-name", "redis.internal"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r := c.redis
	if r.master != "mymaster" || strings.Join(r.sentinelAddrs, "|") != "127.0.0.1:26379|127.0.0.1:26380" ||
		r.username != "pushd" || r.password != "s3cret" || r.tls == nil || r.tls.ServerName != "redis.internal" {
		t.Fatalf("sentinel config %+v", r)
	}

	env := map[string]string{
		"PUSHD_REDIS_CLUSTER":  "127.0.0.1:7000",
		"PUSHD_REDIS_USERNAME": "pushd",
		"PUSHD_REDIS_PASSWORD": "fromenv",
		"PUSHD_REDIS_TLS":      "true",
	}
	c, err = parseConfig(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if r := c.redis; len(r.clusterAddrs) != 1 || r.username != "pushd" || r.password != "fromenv" || r.tls == nil {
		t.Fatalf("cluster from env %+v", r)
	}

	file := filepath.Join(dir, "pushd.yaml")
	if err := os.WriteFile(file, []byte("redis: redis://:inurl@127.0.0.1:6379/0\nredis-username: app\nredis-password-file: "+pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = parseConfig([]string{"-config", file}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o := c.redis.url; o.Username != "app" || o.Password != "s3cret" {
		t.Fatalf("standalone from the file: user %q password %q (the file's -redis-password-file wins over the URL)", o.Username, o.Password)
	}
	// A rediss:// URL implies TLS; secrets never reach -print-config.
	c, err = parseConfig([]string{"-redis", "rediss://127.0.0.1:6380/0", "-redis-sentinel-password", ""}, noEnv, io.Discard)
	if err != nil || c.redis.url.TLSConfig == nil {
		t.Fatalf("rediss://: %+v %v", c.redis.url, err)
	}
	if !secretKey("redis-password") || !secretKey("redis-sentinel-password") {
		t.Fatal("Redis passwords are not redacted by -print-config")
	}
}
