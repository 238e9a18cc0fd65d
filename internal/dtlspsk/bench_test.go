package dtlspsk

import "testing"

// BenchmarkParse measures parsing a PSK identity from a ClientKeyExchange.
func BenchmarkParse(b *testing.B) {
	id := []byte("a1MZxOdcBnO,test_01,2,3600")
	b.ReportAllocs()
	for b.Loop() {
		got, err := Parse(id)
		if err != nil || got.DeviceKey != "test_01" {
			b.Fatalf("Parse = %+v, %v", got, err)
		}
	}
}

// BenchmarkKey measures deriving the PSK from a device secret.
func BenchmarkKey(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if k := Key("devsecret1"); len(k) != 16 {
			b.Fatalf("key of %d bytes", len(k))
		}
	}
}
