package topic

import (
	"fmt"
	"strings"
)

// MaxFilterLen bounds a topic filter's length in bytes.
const MaxFilterLen = 512

// ValidFilter checks an MQTT topic filter (MQTT v3.1.1 §4.7): levels are
// separated by '/', '+' stands alone in its level and matches exactly one
// level, '#' stands alone in the last level and matches that level's parent
// and everything below it.
func ValidFilter(filter string) error {
	if filter == "" {
		return fmt.Errorf("%w: empty filter", ErrInvalid)
	}
	if len(filter) > MaxFilterLen {
		return fmt.Errorf("%w: filter longer than %d bytes", ErrInvalid, MaxFilterLen)
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("%w: '#' must be the last level of %q", ErrInvalid, filter)
		case l != "+" && l != "#" && strings.ContainsAny(l, "+#"):
			return fmt.Errorf("%w: wildcard inside level %q of %q", ErrInvalid, l, filter)
		}
		for j := 0; j < len(l); j++ {
			if c := l[j]; c < 0x20 || c == 0x7f {
				return fmt.Errorf("%w: control character in filter", ErrInvalid)
			}
		}
	}
	return nil
}

// Match reports whether topic matches the MQTT filter (assumed valid, see
// ValidFilter). As in MQTT §4.7.2, a filter that starts with a wildcard
// does not match a topic that starts with '$' (the lifecycle events of
// message.EventTopic): those need a filter naming "$events" explicitly.
func Match(filter, topic string) bool {
	if len(topic) > 0 && topic[0] == '$' && len(filter) > 0 && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		switch {
		case !fmore && !tmore:
			return true
		case !tmore:
			// "a/#" matches "a": the rest of the filter must be just "#".
			return frest == "#"
		case !fmore:
			return false
		}
		filter, topic = frest, trest
	}
}
