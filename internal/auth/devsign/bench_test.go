package devsign

import "testing"

// BenchmarkVerify measures checking an /auth signature (HMAC-MD5 over the
// sorted fields, the SDK default) with the docs/protocol.md §3.5 vector.
func BenchmarkVerify(b *testing.B) {
	fields := map[string]string{"clientId": "a1MZxOdcBnO.test_01", "deviceName": "test_01", "productKey": "a1MZxOdcBnO"}
	const secret, sign = "t9GmMf2jb3LgWfXBaZD2r3aJrfVWBv56", "2db0e24ea7eb7f2570fa153fa5559f74"
	b.ReportAllocs()
	for b.Loop() {
		ok, err := Verify(HMACMD5, secret, fields, sign)
		if err != nil || !ok {
			b.Fatalf("Verify = %v, %v; want true", ok, err)
		}
	}
}
