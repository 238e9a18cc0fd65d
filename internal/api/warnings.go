package api

import (
	"encoding/json"
	"fmt"

	"github.com/coapgate/coapgate/internal/registry"
)

// Warning is a non-fatal remark on a created or changed object: the request
// succeeded, but something about it deserves attention.
type Warning struct {
	// Code is stable: "exceeds_firmware_limit".
	Code    string `json:"code"`
	Field   string `json:"field"`
	Limit   int    `json:"limit,omitempty"`
	Message string `json:"message"`
}

// created is the response to a create: the object's fields, and warnings
// when there are any.
type created[T any] struct {
	Object   T         `json:"-"`
	Warnings []Warning `json:"warnings,omitempty"`
}

// MarshalJSON writes the object's fields followed by "warnings".
func (c created[T]) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(c.Object)
	if err != nil || len(c.Warnings) == 0 {
		return b, err
	}
	w, err := json.Marshal(c.Warnings)
	if err != nil {
		return nil, err
	}
	b = append(b[:len(b)-1], `,"warnings":`...)
	return append(append(b, w...), '}'), nil
}

// firmwareWarnings turns values longer than the vendor firmware accepts
// (productKey 20, deviceName 32, secrets 64 characters) into warnings.
func firmwareWarnings(fields ...[2]string) []Warning {
	var out []Warning
	for _, l := range registry.FirmwareLimits(fields...) {
		out = append(out, Warning{Code: "exceeds_firmware_limit", Field: l.Field, Limit: l.Limit,
			Message: fmt.Sprintf("%s is %d characters; the vendor's device SDK accepts at most %d, so this device cannot be provisioned into firmware built on it", l.Field, l.Len, l.Limit)})
	}
	return out
}
