package sdk

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"

	"github.com/coapgate/coapgate/internal/auth/symmetric"
)

// docs/protocol.md §3.5: the symmetric-mode auth signs seq like any field, and
// the first uplink of a session with random 1a48574a01ce8766 and seqOffset 1
// carries the published option 2089.
func TestSymmetricVectors(t *testing.T) {
	b, err := authPayloadSeq(vecCreds, JSON, "2989")
	if err != nil {
		t.Fatal(err)
	}
	var req authRequest
	if err := json.Unmarshal(b, &req); err != nil {
		t.Fatal(err)
	}
	if req.Seq != "2989" || req.Sign != "199c4a316febb5f5780dffa897355bc6" {
		t.Fatalf("auth payload %s", b)
	}
	s := newSymSession(vecDS, authResponse{Token: "t", Random: "1a48574a01ce8766", SeqOffset: 1})
	if got := hex.EncodeToString(s.key[:]); got != "2a56c60f98ebceff9e38f02e9d2bc587" {
		t.Fatalf("key %s", got)
	}
	body, seq := s.seal([]byte(`{"id":"1"}`))
	if got := hex.EncodeToString(seq); got != "3ed352c2f0fffc0a048fa27d0d8353b9" {
		t.Fatalf("first option 2089 %s", got)
	}
	if plain, err := s.open(body); err != nil || string(plain) != `{"id":"1"}` {
		t.Fatalf("open(seal) = %q, %v", plain, err)
	}
	_, seq2 := s.seal(nil)
	if n, err := symmetric.DecryptSeq(s.key, seq2); err != nil || n != 2 {
		t.Fatalf("second seq %d, %v", n, err)
	}
}

func TestParseAuthReplySymmetric(t *testing.T) {
	tests := []struct {
		name string
		body string
		err  error
	}{
		{"complete", `{"random":"1a48574a01ce8766","seqOffset":3,"token":"T"}`, nil},
		{"no random", `{"seqOffset":3,"token":"T"}`, ErrMalformed},
		{"no seqOffset", `{"random":"1a48574a01ce8766","token":"T"}`, ErrMalformed},
		{"no token", `{"random":"1a48574a01ce8766","seqOffset":3}`, ErrNoToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ar, err := parseAuthReply([]byte(tt.body), false, true)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if err == nil && (ar.Random != "1a48574a01ce8766" || ar.SeqOffset != 3) {
				t.Fatalf("reply %+v", ar)
			}
		})
	}
}

func TestSymmetricNeedsCredentials(t *testing.T) {
	c := defaultConfig()
	c.symmetric = true
	if err := c.validate(); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("validate = %v", err)
	}
}
