package thing

import (
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// BenchmarkDecode: the per-publish cost of decoding on the uplink path.
func BenchmarkDecode(b *testing.B) {
	mpJSON := []byte(`{"id":"1","version":"1.0","method":"thing.measurepoint.post","params":{"measurepoints":{"temp":21.5,"hum":{"value":40,"quality":0}},"time":1700000000000}}`)
	cases := []struct {
		name, topic string
		payload     []byte
		cf          uint16
	}{
		{"measurepoint/json", mpTopic, mpJSON, cfJSON},
		{"measurepoint/cbor", mpTopic, mustCBORBench(b, mpJSON), cfCBOR},
		{"property/json", propTopic, []byte(`{"id":"77","version":"1.0","method":"thing.event.property.post","params":{"temp":21.5}}`), cfJSON},
		{"invalid/json", propTopic, []byte(`{"id":"9","params":[1]}`), cfJSON},
		{"raw", "/sys/pk/dk/thing/model/up_raw", make([]byte, 64), 42},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.payload)))
			for b.Loop() {
				Decode(c.topic, c.payload, c.cf, recv)
			}
		})
	}
}

// mustCBORBench re-encodes a JSON document as CBOR for the benchmark.
func mustCBORBench(b *testing.B, js []byte) []byte {
	m, err := parseJSON(js)
	if err != nil {
		b.Fatal(err)
	}
	n, _ := normalize(map[string]any(m))
	out, err2 := cbor.Marshal(n)
	if err2 != nil {
		b.Fatal(err2)
	}
	return out
}
