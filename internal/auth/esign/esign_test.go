package esign

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/coapgate/coapgate/internal/auth/symmetric"
)

func TestSignIsPlainSHA256OverSortedPairs(t *testing.T) {
	// Computed independently of Sign: the documented concatenation.
	sum := sha256.Sum256([]byte("deviceKey15bBZlRknclifetime3600productKeyMuGsF6W4secureMode2s3cr3t"))
	want := strings.ToUpper(hex.EncodeToString(sum[:]))
	if got := Sign("MuGsF6W4", "15bBZlRknc", "3600", "2", "s3cr3t"); got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	if !Verify("MuGsF6W4", "15bBZlRknc", "3600", "2", "s3cr3t", strings.ToLower(want)) {
		t.Fatal("lower-case sign refused")
	}
	if Verify("MuGsF6W4", "15bBZlRknc", "3601", "2", "s3cr3t", want) {
		t.Fatal("sign over another lifetime accepted")
	}
}

func TestSealOpen(t *testing.T) {
	k := Key("s3cr3t")
	iv := []byte(symmetric.IV)
	opt, err := Seal(k, iv, "tok-sequence-x", 42)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ToUpper(string(opt)) != string(opt) {
		t.Fatalf("option %s is not uppercase hex", opt)
	}
	// Independent decryption with crypto/aes.
	ct, _ := hex.DecodeString(string(opt))
	sum := sha256.Sum256([]byte("s3cr3t"))
	b, _ := aes.NewCipher(sum[8:24])
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(b, iv).CryptBlocks(pt, ct)
	if p := string(pt[:len(pt)-int(pt[len(pt)-1])]); p != "tokentok-sequence-xsequence42" {
		t.Fatalf("plaintext %q", p)
	}
	tok, n, err := Open(k, iv, []byte(strings.ToLower(string(opt))))
	if err != nil || tok != "tok-sequence-x" || n != 42 {
		t.Fatalf("Open = %q, %d, %v", tok, n, err)
	}
	tests := []struct {
		name string
		k    symmetric.Key
		iv   []byte
		opt  []byte
		want error
	}{
		{"empty", k, iv, nil, ErrHex},
		{"odd length", k, iv, opt[:len(opt)-1], ErrHex},
		{"not hex", k, iv, []byte(strings.Repeat("zz", 16)), ErrHex},
		{"not a block multiple", k, iv, opt[:len(opt)-2], symmetric.ErrLength},
		{"wrong key", Key("other"), iv, opt, symmetric.ErrPadding},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := Open(tt.k, tt.iv, tt.opt); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	for _, plain := range []string{"sequence1", "tokenabc", "tokensequence1", "tokenabcsequence", "tokenabcsequence1x", "xtokenabcsequence1"} {
		ct, _ := symmetric.Encrypt(k, iv, []byte(plain))
		if _, _, err := Open(k, iv, []byte(hex.EncodeToString(ct))); !errors.Is(err, ErrFormat) {
			t.Errorf("Open(%q) err = %v, want ErrFormat", plain, err)
		}
	}
}
