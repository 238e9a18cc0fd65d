package config

import (
	"fmt"
	"strings"

	"github.com/coapgate/coapgate/internal/dtlsx/engine"
	"go.yaml.in/yaml/v3"
)

// List is a comma-separated list of names. In YAML it may also be written
// as a sequence.
type List string

// UnmarshalYAML accepts a scalar ("a, b") or a sequence ([a, b]).
func (l *List) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.SequenceNode {
		var items []string
		if err := n.Decode(&items); err != nil {
			return err
		}
		*l = List(strings.Join(items, ","))
		return nil
	}
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	*l = List(s)
	return nil
}

// Items returns the list's non-empty names, trimmed.
func (l List) Items() []string {
	var out []string
	for _, s := range strings.Split(string(l), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// SuiteIDs returns the cipher suites of dtls.suites in order (nil: the
// engine's default choice), or an error naming the unknown or repeated
// names and listing the valid ones.
func (d DTLS) SuiteIDs() ([]uint16, error) {
	var ids []uint16
	var unknown []string
	seen := map[uint16]bool{}
	for _, name := range d.Suites.Items() {
		id, ok := engine.SuiteByName(name)
		switch {
		case !ok:
			unknown = append(unknown, fmt.Sprintf("%q", name))
		case seen[id]:
			return nil, fmt.Errorf("dtls.suites: %s listed twice", engine.SuiteName(id))
		default:
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("dtls.suites: unknown cipher suite %s; valid names: %s",
			strings.Join(unknown, ", "), strings.Join(engine.SuiteNames(), ", "))
	}
	return ids, nil
}
