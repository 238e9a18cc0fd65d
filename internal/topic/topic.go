// Package topic parses the MQTT-style topics devices publish to over CoAP
// (docs/protocol.md §3.2, §4) and enforces the topic ACL: a device reaches only
// its own topics.
package topic

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid means the Uri-Path does not form a valid topic.
var ErrInvalid = errors.New("topic: invalid")

// MaxLen bounds a topic's length in bytes.
const MaxLen = 256

// Parse joins the Uri-Path segments that follow "topic" into a topic string
// "/a/b/c". Segments must be non-empty, must not contain '/', '+', '#' or
// control characters, and the topic must not exceed MaxLen.
func Parse(segments []string) (string, error) {
	if len(segments) == 0 {
		return "", fmt.Errorf("%w: empty", ErrInvalid)
	}
	n := 0
	for _, s := range segments {
		if s == "" {
			return "", fmt.Errorf("%w: empty segment", ErrInvalid)
		}
		for i := 0; i < len(s); i++ {
			if c := s[i]; c == '/' || c == '+' || c == '#' || c < 0x20 || c == 0x7f {
				return "", fmt.Errorf("%w: character %q in segment", ErrInvalid, c)
			}
		}
		n += 1 + len(s)
	}
	if n > MaxLen {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxLen)
	}
	var b strings.Builder
	b.Grow(n)
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(s)
	}
	return b.String(), nil
}

// Allowed reports whether the device (pk, dk) may publish to topic (as
// returned by Parse): only under /sys/{pk}/{dk}/…, /{pk}/{dk}/… (custom
// topics), /ext/session/{pk}/{dk}/… and /ext/ntp/{pk}/{dk}/…, with at least
// one segment after the device key.
func Allowed(topic, pk, dk string) bool {
	if pk == "" || dk == "" || strings.IndexByte(pk, '/') >= 0 || strings.IndexByte(dk, '/') >= 0 {
		return false
	}
	for _, prefix := range [...]string{"/sys/", "/", "/ext/session/", "/ext/ntp/"} {
		rest, ok := strings.CutPrefix(topic, prefix)
		if !ok {
			continue
		}
		if rest, ok = strings.CutPrefix(rest, pk+"/"+dk+"/"); ok && rest != "" {
			return true
		}
	}
	return false
}

// Kind classifies a /sys/{pk}/{dk}/thing/… topic for payload handling.
type Kind int

// Topic kinds the gateway distinguishes today.
const (
	KindCustom Kind = iota // outside /sys/: opaque payload
	KindThing              // thing-model request: JSON/CBOR with an "id" to echo
	KindRaw                // thing/model/up_raw: opaque payload
)

// Classify returns the kind of an allowed topic.
func Classify(topic string) Kind {
	rest, ok := strings.CutPrefix(topic, "/sys/")
	if !ok {
		if strings.HasPrefix(topic, "/ext/") {
			return KindThing
		}
		return KindCustom
	}
	// skip pk and dk
	for range 2 {
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			return KindCustom
		}
		rest = rest[i+1:]
	}
	if rest == "thing/model/up_raw" || strings.HasPrefix(rest, "thing/model/up_raw/") {
		return KindRaw
	}
	return KindThing
}

// Owner is a device a topic may belong to.
type Owner struct{ ProductKey, DeviceKey string }

// Owners returns the devices for which Allowed(topic, pk, dk) holds, the
// /sys/, /ext/session/ and /ext/ntp/ forms first, then the custom
// /{pk}/{dk}/… form (at most two). Requests authenticated by option 2101
// (docs/protocol.md §2.2) carry no device in the clear: the topic names it.
func Owners(topic string) []Owner {
	var out []Owner
	for _, prefix := range [...]string{"/sys/", "/ext/session/", "/ext/ntp/", "/"} {
		rest, ok := strings.CutPrefix(topic, prefix)
		if !ok {
			continue
		}
		parts := strings.SplitN(rest, "/", 3)
		if len(parts) == 3 && parts[0] != "" && parts[1] != "" && parts[2] != "" {
			out = append(out, Owner{parts[0], parts[1]})
		}
		if len(out) == 2 {
			break
		}
	}
	return out
}
