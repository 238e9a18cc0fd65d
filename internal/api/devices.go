package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/coapgate/coapgate/internal/registry"
)

const maxAssetIDLen = 64

// Device is the JSON form of a device with its live status. DeviceSecret is
// set only in the responses to create and rotate-secret.
type Device struct {
	ProductKey      string    `json:"productKey"`
	DeviceKey       string    `json:"deviceKey"`
	DeviceSecret    string    `json:"deviceSecret,omitempty"`
	AssetID         string    `json:"assetId"`
	Enabled         bool      `json:"enabled"`
	TokenGeneration uint32    `json:"tokenGeneration"`
	CreatedAt       time.Time `json:"createdAt"`
	LastSeenAt      time.Time `json:"lastSeenAt,omitzero"`
	LastAddress     string    `json:"lastAddress,omitempty"`
	Transport       string    `json:"transport,omitempty"`
	Online          bool      `json:"online"`
	LifetimeSeconds int64     `json:"lifetimeSeconds"`
}

// deviceJSON merges the registry row with this node's presence: live
// presence wins over the (batched, older) registry columns. p is the
// device's product, for the lifetime of a device not seen by this node.
func (s *server) deviceJSON(d registry.Device, p registry.Product) Device {
	out := Device{
		ProductKey:      d.ProductKey,
		DeviceKey:       d.DeviceKey,
		AssetID:         d.AssetID,
		Enabled:         d.Enabled,
		TokenGeneration: d.Generation,
		CreatedAt:       d.CreatedAt.UTC(),
		LastAddress:     d.LastAddress,
	}
	if !d.LastSeenAt.IsZero() {
		out.LastSeenAt = d.LastSeenAt.UTC()
	}
	lifetime := p.OnlineLifetime
	if lifetime == 0 {
		lifetime = s.o.DefaultOnlineLifetime
	}
	if s.o.Presence != nil {
		if st, ok := s.o.Presence.Lookup(d.ProductKey, d.DeviceKey); ok {
			if !st.LastSeen.IsZero() {
				out.LastSeenAt = st.LastSeen.UTC()
			}
			if st.Address != "" {
				out.LastAddress = st.Address
			}
			out.Transport = st.Transport
			out.Online = st.Online(s.o.Now())
			if st.Lifetime > 0 {
				lifetime = st.Lifetime
			}
		}
	}
	out.LifetimeSeconds = int64(lifetime / time.Second)
	return out
}

type createDeviceRequest struct {
	ProductKey   string `json:"productKey"`
	DeviceKey    string `json:"deviceKey"`
	DeviceSecret string `json:"deviceSecret"`
	AssetID      string `json:"assetId"`
	Enabled      *bool  `json:"enabled"`
}

type updateDeviceRequest struct {
	Enabled *bool   `json:"enabled"`
	AssetID *string `json:"assetId"`
}

func validateAssetID(s string) error {
	if len(s) > maxAssetIDLen {
		return fmt.Errorf("%w: assetId longer than %d bytes", registry.ErrInvalid, maxAssetIDLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return fmt.Errorf("%w: assetId contains a control character", registry.ErrInvalid)
		}
	}
	return nil
}

func (s *server) createDevice(w http.ResponseWriter, r *http.Request) error {
	var req createDeviceRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if err := registry.ValidateProductKey(req.ProductKey); err != nil {
		return err
	}
	d := registry.Device{
		ProductKey:   req.ProductKey,
		DeviceKey:    req.DeviceKey,
		DeviceSecret: registry.Secret(req.DeviceSecret),
		AssetID:      req.AssetID,
		Enabled:      true,
		CreatedAt:    s.now(),
	}
	if d.DeviceKey == "" {
		d.DeviceKey = registry.NewDeviceKey()
	} else if err := registry.ValidateDeviceKey(d.DeviceKey); err != nil {
		return err
	}
	if req.DeviceSecret == "" {
		d.DeviceSecret = registry.NewSecret()
	} else if err := registry.ValidateSecret(req.DeviceSecret); err != nil {
		return fmt.Errorf("deviceSecret: %w", err)
	}
	if err := validateAssetID(d.AssetID); err != nil {
		return err
	}
	if req.Enabled != nil {
		d.Enabled = *req.Enabled
	}
	p, err := s.o.Registry.GetProduct(r.Context(), d.ProductKey)
	if err != nil {
		return storeError(err, fmt.Sprintf("product %q", d.ProductKey))
	}
	if err := s.o.Registry.CreateDevice(r.Context(), d); err != nil {
		// ErrNotFound here means the product was deleted meanwhile.
		if errors.Is(err, registry.ErrNotFound) {
			return storeError(err, fmt.Sprintf("product %q", d.ProductKey))
		}
		return storeError(err, fmt.Sprintf("device \"%s/%s\"", d.ProductKey, d.DeviceKey))
	}
	s.o.OnDeviceChange(d.ProductKey, d.DeviceKey) // drop cached "not found" answers
	s.audit(r, "device created", "pk", d.ProductKey, "dk", d.DeviceKey)
	out := s.deviceJSON(d, p)
	out.DeviceSecret = d.DeviceSecret.Reveal()
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *server) listDevices(w http.ResponseWriter, r *http.Request) error {
	if err := allowQuery(r, "productKey", "limit", "cursor", "after", "online", "q"); err != nil {
		return err
	}
	limit, err := parseLimit(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	after, err := pageCursor(q)
	if err != nil {
		return err
	}
	pk := q.Get("productKey")
	products := make(map[string]registry.Product)
	if pk != "" {
		if err := registry.ValidateProductKey(pk); err != nil {
			return err
		}
		p, err := s.o.Registry.GetProduct(r.Context(), pk)
		if err != nil {
			return storeError(err, fmt.Sprintf("product %q", pk))
		}
		products[pk] = p
	}
	if f, ok, err := parseDeviceFilter(q); err != nil {
		return err
	} else if ok {
		out, err := s.listDevicesFiltered(r.Context(), pk, after, limit, f, products)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	ds, err := s.o.Registry.ListDevices(r.Context(), pk, registry.Page{Limit: limit, After: after})
	if err != nil {
		return fmt.Errorf("list devices: %w", err)
	}
	out := List[Device]{Items: make([]Device, 0, len(ds))}
	for _, d := range ds {
		p, ok := products[d.ProductKey]
		if !ok {
			if p, err = s.o.Registry.GetProduct(r.Context(), d.ProductKey); err != nil {
				return fmt.Errorf("product %q of device %q: %w", d.ProductKey, d.DeviceKey, err)
			}
			products[d.ProductKey] = p
		}
		out.Items = append(out.Items, s.deviceJSON(d, p))
	}
	if len(ds) == limit {
		last := ds[len(ds)-1]
		if pk != "" {
			out.NextCursor = last.DeviceKey
		} else {
			out.NextCursor = last.ProductKey + "/" + last.DeviceKey
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// loadDevice validates the {productKey}/{deviceKey} path values and loads
// the device and its product.
func (s *server) loadDevice(r *http.Request) (registry.Device, registry.Product, error) {
	pk, dk := r.PathValue("productKey"), r.PathValue("deviceKey")
	if err := registry.ValidateProductKey(pk); err != nil {
		return registry.Device{}, registry.Product{}, err
	}
	if err := registry.ValidateDeviceKey(dk); err != nil {
		return registry.Device{}, registry.Product{}, err
	}
	d, err := s.o.Registry.GetDevice(r.Context(), pk, dk)
	if err != nil {
		return registry.Device{}, registry.Product{}, storeError(err, fmt.Sprintf("device \"%s/%s\"", pk, dk))
	}
	p, err := s.o.Registry.GetProduct(r.Context(), pk)
	if err != nil {
		return registry.Device{}, registry.Product{}, storeError(err, fmt.Sprintf("product %q", pk))
	}
	return d, p, nil
}

func (s *server) getDevice(w http.ResponseWriter, r *http.Request) error {
	d, p, err := s.loadDevice(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.deviceJSON(d, p))
	return nil
}

// updateDevice applies a partial update (read-modify-write; the last of two
// concurrent PATCHes wins).
func (s *server) updateDevice(w http.ResponseWriter, r *http.Request) error {
	var req updateDeviceRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	return s.changeDevice(w, r, "device updated", func(d *registry.Device) error {
		if req.Enabled != nil {
			d.Enabled = *req.Enabled
		}
		if req.AssetID != nil {
			if err := validateAssetID(*req.AssetID); err != nil {
				return err
			}
			d.AssetID = *req.AssetID
		}
		return nil
	}, false)
}

// revokeTokens bumps the device's generation: every token issued before is
// refused from now on.
func (s *server) revokeTokens(w http.ResponseWriter, r *http.Request) error {
	if err := decodeJSON(w, r, &struct{}{}, true); err != nil {
		return err
	}
	return s.changeDevice(w, r, "device tokens revoked", func(d *registry.Device) error {
		d.Generation++
		return nil
	}, false)
}

// rotateSecret gives the device a new random secret, returned once, and
// revokes its tokens (they were issued against the old secret).
func (s *server) rotateSecret(w http.ResponseWriter, r *http.Request) error {
	if err := decodeJSON(w, r, &struct{}{}, true); err != nil {
		return err
	}
	return s.changeDevice(w, r, "device secret rotated", func(d *registry.Device) error {
		d.DeviceSecret = registry.NewSecret()
		d.Generation++
		return nil
	}, true)
}

// changeDevice loads the path's device, applies change, stores it, tells
// the gateway, and answers with the device (and its secret if showSecret).
func (s *server) changeDevice(w http.ResponseWriter, r *http.Request, msg string, change func(*registry.Device) error, showSecret bool) error {
	d, p, err := s.loadDevice(r)
	if err != nil {
		return err
	}
	if err := change(&d); err != nil {
		return err
	}
	if err := s.o.Registry.UpdateDevice(r.Context(), d); err != nil {
		return storeError(err, fmt.Sprintf("device \"%s/%s\"", d.ProductKey, d.DeviceKey))
	}
	s.o.OnDeviceChange(d.ProductKey, d.DeviceKey)
	s.audit(r, msg, "pk", d.ProductKey, "dk", d.DeviceKey)
	out := s.deviceJSON(d, p)
	if showSecret {
		out.DeviceSecret = d.DeviceSecret.Reveal()
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) deleteDevice(w http.ResponseWriter, r *http.Request) error {
	pk, dk := r.PathValue("productKey"), r.PathValue("deviceKey")
	if err := registry.ValidateProductKey(pk); err != nil {
		return err
	}
	if err := registry.ValidateDeviceKey(dk); err != nil {
		return err
	}
	if err := s.o.Registry.DeleteDevice(r.Context(), pk, dk); err != nil {
		return storeError(err, fmt.Sprintf("device \"%s/%s\"", pk, dk))
	}
	s.o.OnDeviceChange(pk, dk)
	s.audit(r, "device deleted", "pk", pk, "dk", dk)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
