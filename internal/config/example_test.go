package config

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// exampleFile is the commented example configuration shipped with the
// release (deploy/coapgate.example.yaml).
const exampleFile = "../../deploy/coapgate.example.yaml"

var update = flag.Bool("update", false, "rewrite deploy/coapgate.example.yaml from Default() and Help")

// exampleYAML renders every setting with its help text as a comment and its
// default as the value.
func exampleYAML() []byte {
	var b bytes.Buffer
	b.WriteString(`# coapgate example configuration: every setting, with its default value.
# Use it with:  coapgate serve --config /etc/coapgate/coapgate.yaml
# Each setting is also a COAPGATE_* environment variable (coap.listen is
# COAPGATE_COAP_LISTEN) and a flag (--coap.listen); precedence:
# defaults < this file < environment < flags. Unknown keys are rejected.
# Regenerate: go test ./internal/config -run TestExampleConfig -update
`)
	def := Default()
	section := ""
	for _, f := range Fields(&def) {
		top, leaf, nested := strings.Cut(f.Key, ".")
		indent := ""
		if nested {
			indent = "  "
			if top != section {
				fmt.Fprintf(&b, "\n%s:\n", top)
				section = top
			}
		} else {
			leaf = top
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "%s# %s\n", indent, Help[f.Key])
		var val string
		switch v := f.v.Interface().(type) {
		case time.Duration:
			val = strconv.Quote(v.String())
		case Secret:
			val = strconv.Quote(string(v))
		case List:
			val = strconv.Quote(string(v))
		case string:
			val = strconv.Quote(v)
		default:
			val = fmt.Sprint(v)
		}
		fmt.Fprintf(&b, "%s%s: %s\n", indent, leaf, val)
	}
	return b.Bytes()
}

// TestExampleConfig keeps the example configuration complete: it loads
// (unknown keys are errors), names every setting with a comment above it,
// and gives each its default value.
func TestExampleConfig(t *testing.T) {
	if *update {
		if err := os.WriteFile(exampleFile, exampleYAML(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Load(exampleFile, nil, nil)
	if err != nil {
		t.Fatalf("example does not load: %v", err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		t.Fatal(err)
	}
	commented := map[string]bool{} // dotted key -> has a head comment
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := prefix + k.Value
			if v.Kind == yaml.MappingNode {
				walk(v, key+".")
				continue
			}
			commented[key] = strings.TrimSpace(k.HeadComment) != ""
		}
	}
	walk(root.Content[0], "")
	def := Default()
	gotFields := Fields(&got)
	for i, f := range Fields(&def) {
		has, ok := commented[f.Key]
		switch {
		case !ok:
			t.Errorf("%s: missing from %s (regenerate with -update)", f.Key, exampleFile)
		case !has:
			t.Errorf("%s: no comment above it in %s", f.Key, exampleFile)
		case gotFields[i].String() != f.String() && f.Key != "auth.token_key":
			t.Errorf("%s: example sets %q, the default is %q", f.Key, gotFields[i].String(), f.String())
		}
		if Help[f.Key] == "" {
			t.Errorf("%s: no help text in config.Help", f.Key)
		}
	}
}
