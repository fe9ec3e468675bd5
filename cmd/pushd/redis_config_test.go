package main

import (
	"io"
	"strings"
	"testing"
)

func TestParseConfigRedisFlags(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	c, err := parseConfig([]string{"-redis", "redis://127.0.0.1:6379/2"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.redisOptions == nil || c.redisOptions.Addr != "127.0.0.1:6379" || c.redisOptions.DB != 2 || c.redisOptions.MaxRetries != -1 {
		t.Fatalf("redis options %+v", c.redisOptions)
	}
	c, err = parseConfig([]string{"-redis-cluster", "127.0.0.1:7000, 127.0.0.1:7001"}, noEnv, io.Discard)
	if err != nil || strings.Join(c.redisCluster, "|") != "127.0.0.1:7000|127.0.0.1:7001" {
		t.Fatalf("cluster %q %v", c.redisCluster, err)
	}
	env := func(k string) (string, bool) { return "redis://127.0.0.1:1/0", k == "PUSHD_REDIS" }
	if c, err = parseConfig(nil, env, io.Discard); err != nil || c.redisOptions == nil {
		t.Fatalf("PUSHD_REDIS: %v", err)
	}
	for _, args := range [][]string{
		{"-redis", "http://x"},
		{"-redis", "redis://127.0.0.1:1/0", "-redis-cluster", "127.0.0.1:2"},
		{"-redis-cluster", "nope"},
		{"-redis-cluster", " , "},
	} {
		if _, err := parseConfig(args, noEnv, io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}
