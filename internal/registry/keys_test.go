package registry

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestValidateKey(t *testing.T) {
	tests := []struct {
		name string
		key  string
		ok   bool
	}{
		{"alnum", "a1MZxOdcBnO", true},
		{"single char", "x", true},
		{"all punctuation", "a_b.c@d:e-f", true},
		{"32 chars", strings.Repeat("k", 32), true},
		{"empty", "", false},
		{"33 chars", strings.Repeat("k", 33), false},
		{"comma", "a,b", false},
		{"slash", "a/b", false},
		{"plus", "a+b", false},
		{"hash", "a#b", false},
		{"space", "a b", false},
		{"dollar", "$sys", false},
		{"non-ascii", "caf\u00e9", false},
		{"nul", "a\x00", false},
		{"newline", "a\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, fn := range []struct {
				name string
				f    func(string) error
			}{{"product", ValidateProductKey}, {"device", ValidateDeviceKey}} {
				err := fn.f(tt.key)
				if tt.ok && err != nil {
					t.Errorf("%s(%q) = %v, want nil", fn.name, tt.key, err)
				}
				if !tt.ok && !errors.Is(err, ErrInvalid) {
					t.Errorf("%s(%q) = %v, want ErrInvalid", fn.name, tt.key, err)
				}
			}
		})
	}
}

func TestValidateSecret(t *testing.T) {
	tests := []struct {
		name   string
		secret string
		ok     bool
	}{
		{"demo secret", "t9GmMf2jb3LgWfXBaZD2r3aJrfVWBv56", true},
		{"8 chars", "12345678", true},
		{"punctuation", "a!b\"c#d$e%f&,/+", true},
		{"128 chars", strings.Repeat("s", 128), true},
		{"7 chars", "1234567", false},
		{"129 chars", strings.Repeat("s", 129), false},
		{"space", "abcd efgh", false},
		{"tab", "abcd\tefgh", false},
		{"non-ascii", "abcdefg\u00e9", false},
		{"del", "abcdefgh\x7f", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateSecret(tt.secret)
			if tt.ok && err != nil {
				t.Fatalf("ValidateSecret = %v, want nil", err)
			}
			if !tt.ok {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("ValidateSecret = %v, want ErrInvalid", err)
				}
				if len(tt.secret) > 0 && strings.Contains(err.Error(), tt.secret) {
					t.Fatalf("error %q leaks the secret", err)
				}
			}
		})
	}
}

func TestNewKeys(t *testing.T) {
	tests := []struct {
		name     string
		gen      func() string
		length   int
		validate func(string) error
	}{
		{"product key", NewProductKey, 11, ValidateProductKey},
		{"device key", NewDeviceKey, 10, ValidateDeviceKey},
		{"secret", func() string { return NewSecret().Reveal() }, 32, ValidateSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := make(map[string]bool)
			for range 200 {
				k := tt.gen()
				if len(k) != tt.length {
					t.Fatalf("len(%q) = %d, want %d", k, len(k), tt.length)
				}
				for i := 0; i < len(k); i++ {
					if !strings.ContainsRune(alnum, rune(k[i])) {
						t.Fatalf("%q has non-alphanumeric %q", k, k[i])
					}
				}
				if err := tt.validate(k); err != nil {
					t.Fatalf("generated %q does not validate: %v", k, err)
				}
				if seen[k] {
					t.Fatalf("duplicate %q", k)
				}
				seen[k] = true
			}
		})
	}
}

// TestRandomAlnumUniform checks that every character of the alphabet shows
// up with roughly equal frequency (a gross bias check, not a statistical
// proof): with 62*1000 draws each count should be near 1000.
func TestRandomAlnumUniform(t *testing.T) {
	const per = 1000
	s := randomAlnum(len(alnum) * per)
	counts := make(map[byte]int)
	for i := 0; i < len(s); i++ {
		counts[s[i]]++
	}
	if len(counts) != len(alnum) {
		t.Fatalf("saw %d distinct characters, want %d", len(counts), len(alnum))
	}
	for c, n := range counts {
		// 1000 ± 6σ (σ ≈ 31.4).
		if n < per-190 || n > per+190 {
			t.Errorf("character %q drawn %d times, want about %d", c, n, per)
		}
	}
}

func TestSecretRedacted(t *testing.T) {
	s := NewSecret()
	if s.String() == s.Reveal() {
		t.Fatal("String reveals the secret")
	}
}

func TestLocalChanges(t *testing.T) {
	var l LocalChanges
	var got []string
	cancel1 := l.Subscribe(func(c DeviceChange) { got = append(got, "1:"+c.ProductKey+"/"+c.DeviceKey) })
	l.Subscribe(func(c DeviceChange) { got = append(got, "2:"+c.ProductKey+"/"+c.DeviceKey) })
	if err := l.Publish(context.Background(), DeviceChange{ProductKey: "p", DeviceKey: "d"}); err != nil {
		t.Fatal(err)
	}
	cancel1()
	l.Publish(context.Background(), DeviceChange{ProductKey: "p"})
	if want := []string{"1:p/d", "2:p/d", "2:p/"}; !slices.Equal(got, want) {
		t.Fatalf("deliveries %v, want %v", got, want)
	}
}

func TestNewIncarnation(t *testing.T) {
	seen := map[uint64]bool{}
	for range 1000 {
		n := NewIncarnation()
		if n == 0 || seen[n] {
			t.Fatalf("incarnation %#x is zero or repeated", n)
		}
		seen[n] = true
	}
}
