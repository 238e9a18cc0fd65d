package thing

import "strings"

// KindOf returns the kind of request a topic carries (docs/protocol.md §4), and
// for "event.post" the event id from the topic.
func KindOf(topic string) (kind Kind, eventID string) {
	parts := strings.Split(strings.TrimPrefix(topic, "/"), "/")
	switch {
	case len(parts) >= 4 && parts[0] == "sys":
		return sysKind(parts[3:])
	case len(parts) >= 4 && parts[0] == "ext":
		// /ext/session/{pk}/{dk}/thing/activate/info
		if parts[1] == "session" && len(parts) == 7 && parts[4] == "thing" && parts[5] == "activate" && parts[6] == "info" {
			return KindActivate, ""
		}
		return KindThing, ""
	case len(parts) >= 2 && parts[0] == "ext":
		return KindThing, ""
	}
	return KindCustom, ""
}

// sysKind classifies the segments after /sys/{pk}/{dk}/.
func sysKind(rest []string) (Kind, string) {
	if len(rest) < 2 || rest[0] != "thing" {
		return KindThing, ""
	}
	switch r := strings.Join(rest[1:], "/"); r {
	case "measurepoint/post":
		return KindMeasurePointPost, ""
	case "measurepoint/post/batch":
		return KindMeasurePointBatch, ""
	case "event/property/post":
		return KindPropertyPost, ""
	case "attribute/update":
		return KindAttributeUpdate, ""
	case "attribute/query":
		return KindAttributeQuery, ""
	case "attribute/delete":
		return KindAttributeDelete, ""
	case "deviceinfo/update":
		return KindDeviceInfoUpdate, ""
	default:
		if r == "model/up_raw" || strings.HasPrefix(r, "model/up_raw/") {
			return KindRawUp, ""
		}
	}
	if len(rest) == 4 && rest[1] == "event" && rest[3] == "post" {
		return KindEventPost, rest[2]
	}
	if strings.HasSuffix(rest[len(rest)-1], "_reply") {
		return KindReply, ""
	}
	return KindThing, ""
}

// isRawReply reports the reply to a raw downlink, whose payload is opaque.
func isRawReply(topic string) bool {
	return strings.HasSuffix(topic, "/thing/model/down_raw_reply")
}
