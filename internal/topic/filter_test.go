package topic

import "testing"

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		filter, topic string
		want          bool
	}{
		{"#", "/sys/pk/dk/thing/event/property/post", true},
		{"/sys/+/+/thing/#", "/sys/pk/dk/thing/event/property/post", true},
		{"/sys/+/+/thing/#", "/sys/pk/dk/thing", true}, // '#' includes the parent level
		{"/sys/+/+/thing/#", "/sys/pk/dk/other", false},
		{"/sys/pk/dk/thing/event/+/post", "/sys/pk/dk/thing/event/property/post", true},
		{"/sys/pk/dk/thing/event/+/post", "/sys/pk/dk/thing/event/property/post/x", false},
		{"/sys/pk/dk/thing/event/+/post", "/sys/pk/dk/thing/event/post", false},
		{"/sys/pk/+", "/sys/pk/dk", true},
		{"/sys/pk/+", "/sys/pk/dk/x", false},
		{"/sys/pk/+", "/sys/pk", false},
		{"+/sys/#", "/sys/a", true}, // the empty first level matches '+'
		{"/a/b", "/a/b", true},
		{"/a/b", "/a/bc", false},
		{"/a/b", "/a", false},
		{"/a", "/a/b", false},
		{"#", "$events/pk/dk/online", false}, // MQTT §4.7.2
		{"+/pk/dk/online", "$events/pk/dk/online", false},
		{"$events/#", "$events/pk/dk/online", true},
		{"$events/+/+/online", "$events/pk/dk/online", true},
		{"$events/+/+/online", "$events/pk/dk/offline", false},
	} {
		if got := Match(c.filter, c.topic); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

func TestValidFilter(t *testing.T) {
	for _, f := range []string{"#", "+", "/sys/+/+/thing/#", "$events/+/+/online", "a/b"} {
		if err := ValidFilter(f); err != nil {
			t.Errorf("ValidFilter(%q) = %v", f, err)
		}
	}
	for _, f := range []string{"", "a/#/b", "a/b#", "a+/b", "a/\x01"} {
		if err := ValidFilter(f); err == nil {
			t.Errorf("ValidFilter(%q) = nil, want an error", f)
		}
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("/sys/+/+/thing/#", "/sys/pk/dk/thing/event/property/post")
	f.Add("$events/#", "$events/a/b/online")
	f.Fuzz(func(t *testing.T, filter, topic string) {
		if ValidFilter(filter) != nil {
			return
		}
		got := Match(filter, topic)
		if filter == topic && !got {
			t.Fatalf("a filter without wildcards must match itself: %q", filter)
		}
		if filter == "#" && got != (len(topic) == 0 || topic[0] != '$') {
			t.Fatalf("'#' vs %q: %v", topic, got)
		}
	})
}
