package registry

import "testing"

// TestGeneratedFitFirmware: generated keys and secrets always fit the
// vendor firmware's limits; longer values are reported by field.
func TestGeneratedFitFirmware(t *testing.T) {
	for range 100 {
		if l := FirmwareLimits([2]string{"productKey", NewProductKey()}, [2]string{"deviceKey", NewDeviceKey()},
			[2]string{"deviceSecret", NewSecret().Reveal()}, [2]string{"productSecret", NewSecret().Reveal()}); len(l) != 0 {
			t.Fatalf("generated values over the firmware limits: %+v", l)
		}
	}
	l := FirmwareLimits([2]string{"productKey", "123456789012345678901"}, [2]string{"deviceKey", "ok"},
		[2]string{"deviceSecret", string(make([]byte, 65))})
	if len(l) != 2 || l[0] != (FirmwareLimit{Field: "productKey", Len: 21, Limit: 20}) || l[1] != (FirmwareLimit{Field: "deviceSecret", Len: 65, Limit: 64}) {
		t.Fatalf("FirmwareLimits = %+v", l)
	}
}
