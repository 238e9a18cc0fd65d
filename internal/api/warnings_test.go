package api

import (
	"strings"
	"testing"
)

// TestFirmwareLimitWarnings: a created product or device whose keys or
// secret are longer than the vendor firmware accepts carries warnings
// naming each such field; generated values, and values within the limits,
// carry none.
func TestFirmwareLimitWarnings(t *testing.T) {
	type createdProduct struct {
		Product
		Warnings []Warning
	}
	type createdDevice struct {
		Device
		Warnings []Warning
	}
	e := newTestEnv(t)
	var gen createdProduct
	e.do("POST", "/api/v1/products", map[string]any{"name": "generated"}).want(t, 201, &gen)
	e.rememberSecret(gen.ProductSecret)
	if len(gen.Warnings) != 0 {
		t.Fatalf("generated product key and secret: warnings %+v", gen.Warnings)
	}
	var genDev createdDevice
	e.do("POST", "/api/v1/devices", map[string]any{"productKey": gen.ProductKey}).want(t, 201, &genDev)
	e.rememberSecret(genDev.DeviceSecret)
	if len(genDev.Warnings) != 0 {
		t.Fatalf("generated device key and secret: warnings %+v", genDev.Warnings)
	}
	// At the limits: no warning.
	pk20 := strings.Repeat("p", 20)
	var atLimit createdProduct
	e.do("POST", "/api/v1/products", map[string]any{"name": "p20", "productKey": pk20, "productSecret": strings.Repeat("s", 64)}).want(t, 201, &atLimit)
	e.rememberSecret(atLimit.ProductSecret)
	if len(atLimit.Warnings) != 0 {
		t.Fatalf("values at the limits: warnings %+v", atLimit.Warnings)
	}
	var dev createdDevice
	e.do("POST", "/api/v1/devices", map[string]any{"productKey": pk20, "deviceKey": strings.Repeat("d", 32), "deviceSecret": strings.Repeat("x", 64)}).want(t, 201, &dev)
	e.rememberSecret(dev.DeviceSecret)
	if len(dev.Warnings) != 0 {
		t.Fatalf("device at the limits: warnings %+v", dev.Warnings)
	}
	// Over them: one warning per field.
	pk21 := strings.Repeat("q", 21)
	var over createdProduct
	e.do("POST", "/api/v1/products", map[string]any{"name": "p21", "productKey": pk21, "productSecret": strings.Repeat("s", 65)}).want(t, 201, &over)
	e.rememberSecret(over.ProductSecret)
	if len(over.Warnings) != 2 || over.Warnings[0].Field != "productKey" || over.Warnings[0].Limit != 20 ||
		over.Warnings[1].Field != "productSecret" || over.Warnings[1].Limit != 64 || over.Warnings[0].Code != "exceeds_firmware_limit" {
		t.Fatalf("product over the limits: warnings %+v", over.Warnings)
	}
	var devOver createdDevice
	e.do("POST", "/api/v1/devices", map[string]any{"productKey": pk21, "deviceSecret": strings.Repeat("y", 128)}).want(t, 201, &devOver)
	e.rememberSecret(devOver.DeviceSecret)
	if len(devOver.Warnings) != 2 || devOver.Warnings[0].Field != "productKey" || devOver.Warnings[1].Field != "deviceSecret" ||
		devOver.Warnings[1].Limit != 64 || strings.Contains(devOver.Warnings[1].Message, devOver.DeviceSecret) {
		t.Fatalf("device over the limits: warnings %+v", devOver.Warnings)
	}
	// The product is still created, and fetching it shows no warnings.
	var got createdProduct
	e.do("GET", "/api/v1/products/"+pk21, nil).want(t, 200, &got)
	if got.ProductKey != pk21 || len(got.Warnings) != 0 {
		t.Fatalf("GET product %+v", got)
	}
}
