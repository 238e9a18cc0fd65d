package forward

import (
	"fmt"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
)

// condEnv is the sample environment conditions are compiled against; the
// evaluated one (Env) has the same keys.
var condEnv = map[string]any{
	"topic":         "",
	"productKey":    "",
	"deviceKey":     "",
	"transport":     "",
	"contentFormat": 0,
	"event":         false,
	"payload":       map[string]any{},
	"params":        map[string]any{},
	"receivedAt":    time.Time{},
}

// compileCondition compiles a rule's condition into a boolean program; ""
// gives nil (always true). The error names the problem for the API user.
func compileCondition(src string) (*vm.Program, error) {
	if src == "" {
		return nil, nil
	}
	p, err := expr.Compile(src, expr.Env(condEnv), expr.AsBool())
	if err != nil {
		return nil, invalid("condition: %v", err)
	}
	return p, nil
}

// Env is what a condition sees: topic, productKey, deviceKey, transport,
// contentFormat, event (true for "$events/..." entries), payload (the
// decoded JSON/CBOR payload; nil when it does not decode), params
// (payload.params when it is an object, else nil) and receivedAt (a
// time). Example: `params.temp > 30 && productKey == "wm01"`.
func Env(e *Envelope, payload any) map[string]any {
	var params any
	if m, ok := payload.(map[string]any); ok {
		params = m["params"]
	}
	return map[string]any{
		"topic":         e.Topic,
		"productKey":    e.ProductKey,
		"deviceKey":     e.DeviceKey,
		"transport":     e.Transport,
		"contentFormat": int(e.ContentFormat),
		"event":         len(e.Topic) > 0 && e.Topic[0] == '$',
		"payload":       payload,
		"params":        params,
		"receivedAt":    e.ReceivedAt,
	}
}

// evalCondition runs p; a runtime error (e.g. comparing a missing field)
// is returned and the entry counts as not matching.
func evalCondition(p *vm.Program, env map[string]any) (bool, error) {
	if p == nil {
		return true, nil
	}
	out, err := expr.Run(p, env)
	if err != nil {
		return false, fmt.Errorf("condition: %w", err)
	}
	b, _ := out.(bool)
	return b, nil
}
