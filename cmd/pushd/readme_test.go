package main

import (
	"flag"
	"io"
	"os"
	"strings"
	"testing"
)

// TestREADMEConfigTable: the README's configuration table has one row per
// flag with its environment variable, file key and default, and no row
// for a flag that does not exist.
func TestREADMEConfigTable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "## Configuration\n")
	end := strings.Index(text, "## Metrics\n")
	if start < 0 || end < start {
		t.Fatal("README lacks the Configuration and Metrics sections")
	}
	rows := map[string][]string{}
	for line := range strings.SplitSeq(text[start:end], "\n") {
		if !strings.HasPrefix(line, "| `-") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) < 5 {
			t.Errorf("README row with %d cells: %s", len(cells), line)
			continue
		}
		for i := range cells {
			cells[i] = strings.Trim(strings.TrimSpace(cells[i]), "`")
		}
		rows[strings.TrimPrefix(cells[0], "-")] = cells
	}
	c, err := parseConfig(nil, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c.flags.VisitAll(func(f *flag.Flag) {
		row, ok := rows[f.Name]
		if !ok {
			t.Errorf("README configuration table lacks -%s", f.Name)
			return
		}
		delete(rows, f.Name)
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		key := f.Name
		if notFileKey(f.Name) {
			key = "—"
		}
		env := envKey(f.Name)
		if notEnvKey(f.Name) {
			env = "—"
		}
		if row[1] != env || row[2] != key || row[3] != def {
			t.Errorf("README row for -%s: env %q file key %q default %q, want %q %q %q", f.Name, row[1], row[2], row[3], env, key, def)
		}
	})
	for name := range rows {
		t.Errorf("README configuration table has -%s, which is not a flag", name)
	}
}
