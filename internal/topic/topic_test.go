package topic

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		segs []string
		want string
		err  bool
	}{
		{"property post", []string{"sys", "pk", "dk", "thing", "event", "property", "post"}, "/sys/pk/dk/thing/event/property/post", false},
		{"custom", []string{"pk", "dk", "user", "update"}, "/pk/dk/user/update", false},
		{"empty", nil, "", true},
		{"empty segment", []string{"sys", "", "dk"}, "", true},
		{"slash inside", []string{"sys", "p/k", "dk", "x"}, "", true},
		{"plus wildcard", []string{"sys", "+", "dk", "x"}, "", true},
		{"hash wildcard", []string{"sys", "pk", "dk", "#"}, "", true},
		{"control char", []string{"sys", "pk\x00", "dk", "x"}, "", true},
		{"too long", []string{strings.Repeat("a", MaxLen)}, "", true},
		{"dot segment", []string{"sys", "pk", "dk", ".", "x"}, "", true},
		{"dot-dot segment", []string{"sys", "pk", "dk", "..", "..", "other", "x"}, "", true},
		{"dots inside a segment", []string{"pk", "dk", "v1..2", ".x", "x."}, "/pk/dk/v1..2/.x/x.", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.segs)
			if tt.err {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Parse err = %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestAllowed(t *testing.T) {
	tests := []struct {
		topic  string
		pk, dk string
		want   bool
	}{
		{"/sys/pk/dk/thing/event/property/post", "pk", "dk", true},
		{"/sys/pk/dk/thing/measurepoint/post", "pk", "dk", true},
		{"/pk/dk/user/update", "pk", "dk", true},
		{"/ext/session/pk/dk/thing/activate/info", "pk", "dk", true},
		{"/ext/ntp/pk/dk/request", "pk", "dk", true},
		{"/sys/pk/other/thing/event/property/post", "pk", "dk", false},
		{"/sys/other/dk/thing/event/property/post", "pk", "dk", false},
		{"/sys/pk/dk", "pk", "dk", false},
		{"/sys/pk/dk/", "pk", "dk", false},
		{"/pk/dkx/user", "pk", "dk", false}, // prefix of another device key
		{"/ext/other/pk/dk/x", "pk", "dk", false},
		{"/sys/pk/dk/x", "", "", false},
		{"/sysx/pk/dk/x", "pk", "dk", false},
	}
	for _, tt := range tests {
		t.Run(tt.topic+"@"+tt.pk+"/"+tt.dk, func(t *testing.T) {
			if got := Allowed(tt.topic, tt.pk, tt.dk); got != tt.want {
				t.Fatalf("Allowed = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	for topic, want := range map[string]Kind{
		"/sys/pk/dk/thing/event/property/post":   KindThing,
		"/sys/pk/dk/thing/model/up_raw":          KindRaw,
		"/pk/dk/user/update":                     KindCustom,
		"/ext/session/pk/dk/thing/activate/info": KindThing,
	} {
		if got := Classify(topic); got != want {
			t.Errorf("Classify(%s) = %v, want %v", topic, got, want)
		}
	}
}

func FuzzParseAllowed(f *testing.F) {
	f.Add("sys/pk/dk/thing/event/property/post", "pk", "dk")
	f.Add("pk/dk/user", "pk", "dk")
	f.Add("ext/session/pk/dk/thing/activate/info", "pk", "dk")
	f.Fuzz(func(t *testing.T, path, pk, dk string) {
		top, err := Parse(strings.Split(path, "/"))
		if err != nil {
			return
		}
		if len(top) > MaxLen || !strings.HasPrefix(top, "/") || strings.ContainsAny(top, "+#") || strings.Contains(top, "//") ||
			strings.Contains(top+"/", "/./") || strings.Contains(top+"/", "/../") {
			t.Fatalf("Parse produced invalid topic %q", top)
		}
		if Allowed(top, pk, dk) {
			// Property: an allowed topic names the device's own keys as whole segments.
			want := "/" + pk + "/" + dk + "/"
			if !strings.Contains(top, want) || strings.ContainsAny(pk+dk, "/") {
				t.Fatalf("Allowed(%q, %q, %q) but topic does not contain %q", top, pk, dk, want)
			}
		}
	})
}

func TestOwners(t *testing.T) {
	tests := []struct {
		topic string
		want  []Owner
	}{
		{"/sys/pk/dk/thing/event/property/post", []Owner{{"pk", "dk"}, {"sys", "pk"}}},
		{"/ext/session/pk/dk/thing/activate/info", []Owner{{"pk", "dk"}, {"ext", "session"}}},
		{"/ext/ntp/pk/dk/request", []Owner{{"pk", "dk"}, {"ext", "ntp"}}},
		{"/pk/dk/user/data", []Owner{{"pk", "dk"}}},
		{"/pk/dk", nil},
		{"/sys/pk/dk", []Owner{{"sys", "pk"}}},
		{"/sys/pk", nil},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			got := Owners(tt.topic)
			if len(got) != len(tt.want) {
				t.Fatalf("Owners = %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("Owners = %v, want %v", got, tt.want)
				}
				if !Allowed(tt.topic, got[i].ProductKey, got[i].DeviceKey) {
					t.Fatalf("owner %v not Allowed on %s", got[i], tt.topic)
				}
			}
		})
	}
}
