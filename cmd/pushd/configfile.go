package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The configuration file is YAML: one mapping whose keys are the flag
// names and whose values are what the flag takes (max-frame: 1048576,
// handshake-timeout: 5s, redis: redis://...). A comma-separated flag
// (listKey) may also be given as a YAML list. Unknown keys are errors,
// like unknown flags.

// notFileKey reports the flags that make no sense inside the file.
func notFileKey(name string) bool {
	switch name {
	case "config", "check-config", "print-config", "version":
		return true
	}
	return false
}

// notEnvKey reports the flags that have no PUSHD_* variable: -version,
// because deploy tooling often sets PUSHD_VERSION to the version it
// deploys, and that must not turn a server start into a version print.
func notEnvKey(name string) bool { return name == "version" }

// listKey reports the comma-separated flags, which a file may also give as
// a YAML list.
func listKey(name string) bool {
	switch name {
	case "public", "policy", "redis-cluster", "allowed-origins":
		return true
	}
	return false
}

// secretKey reports the flags whose values -print-config never prints.
func secretKey(name string) bool {
	return name == "jwt-hs256-secret" || name == "admin-api-key" || name == "redis-password" || name == "redis-sentinel-password"
}

// applyConfigFile reads the YAML file at path and sets every flag it names
// that the command line did not set (cmdline). It returns the keys it
// set and every error found (all of them, with line numbers).
func applyConfigFile(fs *flag.FlagSet, path string, cmdline map[string]bool) (map[string]bool, []error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, []error{fmt.Errorf("-config: %w", err)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, []error{fmt.Errorf("config file %s: %w", path, err)}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return map[string]bool{}, nil // empty file: defaults
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, []error{fmt.Errorf("config file %s:%d: want a mapping of flag names to values", path, root.Line)}
	}
	keys := map[string]bool{}
	var errs []error
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		at := fmt.Sprintf("config file %s:%d", path, k.Line)
		name := k.Value
		f := fs.Lookup(name)
		switch {
		case k.Kind != yaml.ScalarNode:
			errs = append(errs, fmt.Errorf("%s: keys must be flag names", at))
			continue
		case f == nil || notFileKey(name):
			errs = append(errs, fmt.Errorf("%s: unknown key %q", at, name))
			continue
		case keys[name]:
			errs = append(errs, fmt.Errorf("%s: %q given twice", at, name))
			continue
		}
		keys[name] = true
		val, err := scalarValue(v, listKey(name))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", at, name, err))
			continue
		}
		if cmdline[name] {
			continue // the command line wins
		}
		if err := f.Value.Set(val); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %q: %w", at, name, val, err))
		}
	}
	return keys, errs
}

// errFileValue reports a value of the wrong YAML shape.
var errFileValue = errors.New("want a single value")

// scalarValue is a key's value as the flag's string: a scalar as written
// (null is empty), or a list of scalars joined with commas when list.
func scalarValue(v *yaml.Node, list bool) (string, error) {
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return "", nil
		}
		return v.Value, nil
	case yaml.SequenceNode:
		if !list {
			return "", errFileValue
		}
		items := make([]string, 0, len(v.Content))
		for _, it := range v.Content {
			if it.Kind != yaml.ScalarNode {
				return "", fmt.Errorf("%w (list items must be plain values)", errFileValue)
			}
			items = append(items, it.Value)
		}
		return strings.Join(items, ","), nil
	default:
		return "", errFileValue
	}
}

// printConfig writes the effective configuration in the file format (so
// the output is a valid -config file), each key under its flag's help.
// Secret values are never printed: a set secret becomes a comment, and a
// Redis URL's password is masked.
func printConfig(w io.Writer, c Config) error {
	var buf bytes.Buffer
	buf.WriteString("# pushd effective configuration (defaults < file < PUSHD_* environment < flags)\n")
	var errs []error
	c.flags.VisitAll(func(f *flag.Flag) {
		if notFileKey(f.Name) {
			return
		}
		fmt.Fprintf(&buf, "\n# %s\n", f.Usage)
		v := f.Value.(flag.Getter).Get()
		if secretKey(f.Name) && f.Value.String() != "" {
			fmt.Fprintf(&buf, "# %s: <redacted>\n", f.Name)
			return
		}
		if s, ok := v.(string); ok && (f.Name == "redis") && s != "" {
			v = redactURL(s)
		}
		out, err := yaml.Marshal(yamlValue(v))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.Name, err))
			return
		}
		fmt.Fprintf(&buf, "%s: %s", f.Name, out)
	})
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// yamlValue maps a flag's typed value onto what YAML should print:
// durations as "5s"; numbers, booleans and strings as YAML writes them.
func yamlValue(v any) any {
	if d, ok := v.(time.Duration); ok {
		return d.String()
	}
	return v
}

// redactURL masks the password of a redis:// URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<unparseable, redacted>"
	}
	return u.Redacted()
}
