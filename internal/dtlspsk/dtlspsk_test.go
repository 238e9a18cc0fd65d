package dtlspsk

import (
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   Identity
		reason string
	}{
		{"mode 2", "MuGsF6W4,15bBZlRknc,2,3600", Identity{"MuGsF6W4", "15bBZlRknc", 2, time.Hour}, ""},
		{"mode 3", "pk,dk,3,30", Identity{"pk", "dk", 3, 30 * time.Second}, ""},
		{"max lifetime", "pk,dk,2,86400", Identity{"pk", "dk", 2, 86400 * time.Second}, ""},
		{"key alphabet", "a_b.c@d:e-f,Z9,2,60", Identity{"a_b.c@d:e-f", "Z9", 2, time.Minute}, ""},
		{"empty", "", Identity{}, ReasonMalformedIdentity},
		{"three fields", "pk,dk,2", Identity{}, ReasonMalformedIdentity},
		{"five fields", "pk,dk,2,60,x", Identity{}, ReasonMalformedIdentity},
		{"trailing comma", "pk,dk,2,60,", Identity{}, ReasonMalformedIdentity},
		{"empty product", ",dk,2,60", Identity{}, ReasonMalformedIdentity},
		{"empty device", "pk,,2,60", Identity{}, ReasonMalformedIdentity},
		{"bad key char", "p/k,dk,2,60", Identity{}, ReasonMalformedIdentity},
		{"space", "pk, dk,2,60", Identity{}, ReasonMalformedIdentity},
		{"key too long", strings.Repeat("k", 33) + ",dk,2,60", Identity{}, ReasonMalformedIdentity},
		{"mode 1", "pk,dk,1,60", Identity{}, ReasonMalformedIdentity},
		{"mode 02", "pk,dk,02,60", Identity{}, ReasonMalformedIdentity},
		{"mode empty", "pk,dk,,60", Identity{}, ReasonMalformedIdentity},
		{"lifetime below", "pk,dk,2,29", Identity{}, ReasonBadLifetime},
		{"lifetime above", "pk,dk,2,86401", Identity{}, ReasonBadLifetime},
		{"lifetime zero", "pk,dk,2,0", Identity{}, ReasonBadLifetime},
		{"lifetime leading zero", "pk,dk,2,060", Identity{}, ReasonBadLifetime},
		{"lifetime sign", "pk,dk,2,+60", Identity{}, ReasonBadLifetime},
		{"lifetime negative", "pk,dk,2,-60", Identity{}, ReasonBadLifetime},
		{"lifetime fraction", "pk,dk,2,60.5", Identity{}, ReasonBadLifetime},
		{"lifetime empty", "pk,dk,2,", Identity{}, ReasonBadLifetime},
		{"lifetime huge", "pk,dk,2,99999999999999999999", Identity{}, ReasonBadLifetime},
		{"too long", strings.Repeat("a", MaxIdentityLen+1), Identity{}, ReasonMalformedIdentity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if tt.reason != "" {
				if Reason(err) != tt.reason {
					t.Fatalf("Parse(%q) err = %v, want reason %s", tt.in, err, tt.reason)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			if got.String() != tt.in {
				t.Fatalf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func TestLifetimeBounds(t *testing.T) {
	for secs := MinLifetime - 2; secs <= MinLifetime+1; secs++ {
		_, err := Parse([]byte("pk,dk,2," + itoa(secs)))
		if (err == nil) != (secs >= MinLifetime) {
			t.Errorf("lifetime %d: err %v", secs, err)
		}
	}
	for secs := MaxLifetime - 1; secs <= MaxLifetime+2; secs++ {
		_, err := Parse([]byte("pk,dk,2," + itoa(secs)))
		if (err == nil) != (secs <= MaxLifetime) {
			t.Errorf("lifetime %d: err %v", secs, err)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestKey(t *testing.T) {
	// The interop vector measured against libcoap: devsecret1 → a416….
	if got := hex.EncodeToString(Key("devsecret1")); got != "a416dac63bb52a7d94ddd45db9a2de92" {
		t.Fatalf("Key(devsecret1) = %s", got)
	}
	if len(Key("")) != KeyLen {
		t.Fatal("key length")
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts
// satisfies the identity rules and round-trips through String.
func FuzzParse(f *testing.F) {
	f.Add("MuGsF6W4,15bBZlRknc,2,3600")
	f.Add("pk,dk,3,30")
	f.Add("pk,dk,2,86401")
	f.Add("pk,,2,60")
	f.Add(",,,")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse([]byte(s))
		if err != nil {
			if Reason(err) == "" {
				t.Fatalf("error without reason: %v", err)
			}
			return
		}
		if id.SecureMode != ModeDevice && id.SecureMode != ModeProduct {
			t.Fatalf("mode %d accepted", id.SecureMode)
		}
		if id.Lifetime < MinLifetime*time.Second || id.Lifetime > MaxLifetime*time.Second {
			t.Fatalf("lifetime %v accepted", id.Lifetime)
		}
		if strings.Contains(id.ProductKey+id.DeviceKey, ",") {
			t.Fatal("comma in a key")
		}
		if id.String() != s {
			t.Fatalf("round trip %q -> %q", s, id.String())
		}
	})
}
