// Package registry holds the device registry's domain types (products and
// devices) and the Store interface that persistence adapters implement.
//
// Adapters live in sub-packages named after their technology (sqlitestore,
// later pgstore) and must pass the shared conformance suite in storetest.
package registry

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Sentinel errors returned by every Store implementation.
var (
	// ErrNotFound means the product, device or key does not exist.
	ErrNotFound = errors.New("registry: not found")
	// ErrConflict means a create collided with an existing key, or a delete
	// would orphan dependants (a product that still has devices).
	ErrConflict = errors.New("registry: conflict")
)

// Secret is a credential (device or product secret). Its String and LogValue
// redact it, so a Secret passed to a logger or fmt never leaks; call Reveal
// where the raw value is needed (signing, key derivation, the one-time
// create response).
type Secret string

// String implements fmt.Stringer with a redacted value.
func (s Secret) String() string { return "[REDACTED]" }

// LogValue implements slog.LogValuer with a redacted value.
func (s Secret) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// Reveal returns the raw secret.
func (s Secret) Reveal() string { return string(s) }

// DataFormat is a product's default payload encoding.
type DataFormat string

// Data formats a product can default to.
const (
	FormatJSON DataFormat = "json"
	FormatCBOR DataFormat = "cbor"
)

// Valid reports whether f is a known data format.
func (f DataFormat) Valid() bool { return f == FormatJSON || f == FormatCBOR }

// Product is a class of devices sharing a product key and product secret.
type Product struct {
	ProductKey          string
	ProductSecret       Secret
	Name                string
	DynamicRegistration bool
	DataFormat          DataFormat
	// OnlineLifetime is how long a token-authenticated device stays online
	// after its last message; 0 means the gateway default.
	OnlineLifetime time.Duration
	CreatedAt      time.Time
	// Retention overrides the gateway's retention periods for this
	// product's data.
	Retention Retention
}

// Retention holds per-product retention periods. A nil field inherits the
// gateway's setting; 0 keeps the data forever.
type Retention struct {
	Messages *time.Duration // message log entries (uplinks and lifecycle entries)
	Points   *time.Duration // point samples
	Events   *time.Duration // device online/offline events
	Commands *time.Duration // finished downlink commands
}

// Device is one device; DeviceKey is the dialects' deviceName.
type Device struct {
	ProductKey   string
	DeviceKey    string
	DeviceSecret Secret
	AssetID      string
	Enabled      bool
	// Incarnation identifies this device record among every record ever
	// created with the same product and device key: a random non-zero
	// number assigned at creation (CreateDevice assigns one when it is 0)
	// and never changed. Tokens and DTLS sessions are bound to it, so a
	// credential issued before a delete is refused after a re-create.
	Incarnation uint64
	// Generation is bumped to revoke every token and end every DTLS
	// session of the device (revoke-tokens, rotate-secret).
	Generation  uint32
	CreatedAt   time.Time
	LastSeenAt  time.Time // zero when never seen
	LastAddress string
}

// Page selects a page of a key-ordered listing (keyset pagination).
type Page struct {
	// Limit is the maximum number of rows; <= 0 means the adapter default (100).
	Limit int
	// After is the key of the last row of the previous page ("" for the first).
	// For devices it is the device key within the product.
	After string
}

// Presence is one device's last contact, written in batches.
type Presence struct {
	ProductKey string
	DeviceKey  string
	SeenAt     time.Time
	Address    string
}

// Store persists products and devices. Implementations are safe for
// concurrent use. Create* fail with ErrConflict on an existing key; Get*,
// Update* and Delete* fail with ErrNotFound on a missing one.
type Store interface {
	CreateProduct(ctx context.Context, p Product) error
	GetProduct(ctx context.Context, productKey string) (Product, error)
	// ListProducts returns products ordered by product key.
	ListProducts(ctx context.Context, page Page) ([]Product, error)
	// UpdateProduct replaces every field but ProductKey and CreatedAt.
	UpdateProduct(ctx context.Context, p Product) error
	// DeleteProduct fails with ErrConflict while the product has devices.
	DeleteProduct(ctx context.Context, productKey string) error

	// CreateDevice fails with ErrNotFound when the product does not exist.
	// A zero Incarnation is replaced by NewIncarnation().
	CreateDevice(ctx context.Context, d Device) error
	GetDevice(ctx context.Context, productKey, deviceKey string) (Device, error)
	// ListDevices returns the product's devices ordered by device key; an
	// empty productKey lists all devices ordered by (product key, device key)
	// and then page.After is "productKey/deviceKey".
	ListDevices(ctx context.Context, productKey string, page Page) ([]Device, error)
	// UpdateDevice replaces DeviceSecret, AssetID, Enabled and Generation
	// (never Incarnation).
	UpdateDevice(ctx context.Context, d Device) error
	DeleteDevice(ctx context.Context, productKey, deviceKey string) error
	// TouchDevices records last contact; unknown devices are skipped.
	TouchDevices(ctx context.Context, seen []Presence) error
}
