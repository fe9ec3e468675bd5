package main

import (
	"io"
	"strings"
	"testing"

	"github.com/pushd/pushd/fanout"
)

func TestParseConfigPushFlags(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	c, err := parseConfig([]string{"-public", "news, login:*", "-policy", "game:*=conflate,feed:*=drop", "-history-size", "0"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.publicPatterns, "|") != "news|login:*" {
		t.Errorf("public %q", c.publicPatterns)
	}
	want := []fanout.PolicyRule{{Pattern: "game:*", Policy: fanout.PolicyConflate}, {Pattern: "feed:*", Policy: fanout.PolicyDrop}}
	if len(c.policyRules) != 2 || c.policyRules[0] != want[0] || c.policyRules[1] != want[1] {
		t.Errorf("policy %+v", c.policyRules)
	}
	// Defaults: everything public, no rules (disconnect).
	c, err = parseConfig(nil, noEnv, io.Discard)
	if err != nil || strings.Join(c.publicPatterns, "|") != "*" || len(c.policyRules) != 0 {
		t.Errorf("defaults: %v %q %v", err, c.publicPatterns, c.policyRules)
	}
	// The environment fills flags.
	env := func(k string) (string, bool) {
		v, ok := map[string]string{"PUSHD_POLICY": "x:*=drop", "PUSHD_PUBLIC": ""}[k]
		return v, ok
	}
	c, err = parseConfig(nil, env, io.Discard)
	if err != nil || len(c.publicPatterns) != 0 || len(c.policyRules) != 1 {
		t.Errorf("env: %v %q %v", err, c.publicPatterns, c.policyRules)
	}
	// Every error at once.
	_, err = parseConfig([]string{"-policy", "game:*=explode,nopattern", "-public", "a b", "-chunk-size", "0",
		"-max-publish-bytes", "0", "-history-ttl", "0s", "-history-size", "-1", "-max-subscriptions", "0"}, noEnv, io.Discard)
	if err == nil {
		t.Fatal("invalid flags accepted")
	}
	for _, frag := range []string{`"game:*=explode"`, `"nopattern"`, `"a b"`, "-chunk-size", "-max-publish-bytes", "-history-ttl", "-history-size", "-max-subscriptions"} {
		if !strings.Contains(err.Error(), frag) {
			t.Errorf("error lacks %s:\n%v", frag, err)
		}
	}
}
