package topic

import "testing"

// BenchmarkAllowed measures the publish ACL for a device's own property
// post topic.
func BenchmarkAllowed(b *testing.B) {
	const t = "/sys/a1MZxOdcBnO/test_01/thing/event/property/post"
	b.ReportAllocs()
	for b.Loop() {
		if !Allowed(t, "a1MZxOdcBnO", "test_01") {
			b.Fatal("own topic refused")
		}
	}
}

// BenchmarkParse measures turning Uri-Path segments into a topic.
func BenchmarkParse(b *testing.B) {
	segs := []string{"sys", "a1MZxOdcBnO", "test_01", "thing", "event", "property", "post"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(segs); err != nil {
			b.Fatal(err)
		}
	}
}
