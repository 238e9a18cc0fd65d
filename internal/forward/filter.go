package forward

import "github.com/coapgate/coapgate/internal/topic"

// ValidateFilter checks a rule's MQTT topic filter (topic.ValidFilter),
// reporting a problem as ErrInvalid.
func ValidateFilter(f string) error {
	if err := topic.ValidFilter(f); err != nil {
		return invalid("topicFilter %q: %v", f, err)
	}
	return nil
}

// MatchFilter reports whether topic matches the (valid) MQTT filter; see
// topic.Match (a filter starting with a wildcard does not match the
// '$events/…' lifecycle topics, and "a/#" matches "a").
func MatchFilter(filter, t string) bool { return topic.Match(filter, t) }
