package forward

import "strings"

// maxFilterLen bounds a topic filter.
const maxFilterLen = 512

// ValidateFilter checks an MQTT topic filter (v3.1.1 §4.7.1): '#' only as
// the whole last level, '+' only as a whole level.
func ValidateFilter(f string) error {
	if f == "" || len(f) > maxFilterLen {
		return invalid("topicFilter must be 1..%d bytes", maxFilterLen)
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return invalid("topicFilter %q: '#' must be the last level", f)
		case strings.Contains(l, "#") && l != "#":
			return invalid("topicFilter %q: '#' must be a whole level", f)
		case strings.Contains(l, "+") && l != "+":
			return invalid("topicFilter %q: '+' must be a whole level", f)
		}
	}
	return nil
}

// MatchFilter reports whether topic matches the (valid) MQTT filter. As in
// MQTT (v3.1.1 §4.7.2), a filter starting with a wildcard does not match a
// topic starting with '$' (lifecycle events), and "a/#" matches "a".
func MatchFilter(filter, topic string) bool {
	if topic != "" && topic[0] == '$' && filter != "" && (filter[0] == '+' || filter[0] == '#') {
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
		case !tmore: // topic ended: only a trailing "/#" still matches
			return frest == "#"
		case !fmore:
			return false
		}
		filter, topic = frest, trest
	}
}
