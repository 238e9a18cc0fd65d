package message

import "testing"

// TestExchangeKey: a retransmission (same device, Message ID, token and
// payload) has one key wherever it arrives from; changing any of the four
// gives another key.
func TestExchangeKey(t *testing.T) {
	base := ExchangeKey("pk", "dk", 7, []byte{1, 2}, []byte(`{"n":1}`))
	if again := ExchangeKey("pk", "dk", 7, []byte{1, 2}, []byte(`{"n":1}`)); again != base {
		t.Fatalf("same exchange, two keys: %q %q", base, again)
	}
	for name, k := range map[string]string{
		"device":  ExchangeKey("pk", "dk2", 7, []byte{1, 2}, []byte(`{"n":1}`)),
		"product": ExchangeKey("pk2", "dk", 7, []byte{1, 2}, []byte(`{"n":1}`)),
		"mid":     ExchangeKey("pk", "dk", 8, []byte{1, 2}, []byte(`{"n":1}`)),
		"token":   ExchangeKey("pk", "dk", 7, []byte{1, 3}, []byte(`{"n":1}`)),
		"payload": ExchangeKey("pk", "dk", 7, []byte{1, 2}, []byte(`{"n":2}`)),
		"split":   ExchangeKey("pk/dk", "", 7, []byte{1, 2}, []byte(`{"n":1}`)),
	} {
		if k == base {
			t.Errorf("another %s, same key %q", name, k)
		}
	}
}
