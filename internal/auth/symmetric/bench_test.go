package symmetric

import (
	"bytes"
	"testing"
)

// BenchmarkDecrypt measures decrypting a 64-byte symmetric-mode payload
// (AES-128-CBC, PKCS#7) with the session key of the docs/protocol.md §3.5 vector.
func BenchmarkDecrypt(b *testing.B) {
	k := SessionKey("t9GmMf2jb3LgWfXBaZD2r3aJrfVWBv56", "1a48574a01ce8766")
	plain := bytes.Repeat([]byte("x"), 64)
	ct, err := Encrypt(k, []byte(IV), plain)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(ct)))
	for b.Loop() {
		got, err := Decrypt(k, []byte(IV), ct)
		if err != nil || !bytes.Equal(got, plain) {
			b.Fatalf("Decrypt = %q, %v", got, err)
		}
	}
}

// BenchmarkDecryptSeq measures reading option 2089.
func BenchmarkDecryptSeq(b *testing.B) {
	k := SessionKey("t9GmMf2jb3LgWfXBaZD2r3aJrfVWBv56", "1a48574a01ce8766")
	opt := EncryptSeq(k, 123456)
	b.ReportAllocs()
	for b.Loop() {
		if seq, err := DecryptSeq(k, opt); err != nil || seq != 123456 {
			b.Fatalf("DecryptSeq = %d, %v", seq, err)
		}
	}
}
