package forward

import "strings"

// Expand fills a topic or subject template: {productKey}, {deviceKey} and
// {topic} are replaced by the entry's values; other text is kept. {topic}
// is the log topic without its leading '/' ("sys/pk/dk/thing/event/
// property/post", "$events/pk/dk/online"); with sep '.', as for NATS
// subjects, its '/' separators become '.'.
func Expand(tpl string, d *Delivery, sep byte) string {
	if !strings.Contains(tpl, "{") {
		return tpl
	}
	topic := strings.TrimPrefix(d.Envelope.Topic, "/")
	if sep != '/' {
		topic = strings.ReplaceAll(topic, "/", string(sep))
	}
	return strings.NewReplacer(
		"{productKey}", d.Envelope.ProductKey,
		"{deviceKey}", d.Envelope.DeviceKey,
		"{topic}", topic,
	).Replace(tpl)
}
