package api

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/coapgate/coapgate/internal/registry"
)

// Bounds of a product's online lifetime, in seconds: those of the PSK
// identity's lifetime field (docs/protocol.md §2). 0 means the gateway default.
const (
	minLifetimeSeconds = 30
	maxLifetimeSeconds = 86400
	maxNameLen         = 128
)

// Product is the JSON form of a registry.Product. ProductSecret is set only
// in the response to a create.
type Product struct {
	ProductKey          string    `json:"productKey"`
	ProductSecret       string    `json:"productSecret,omitempty"`
	Name                string    `json:"name"`
	DynamicRegistration bool      `json:"dynamicRegistration"`
	DataFormat          string    `json:"dataFormat"`
	OnlineLifetimeSecs  int64     `json:"onlineLifetimeSeconds"`
	CreatedAt           time.Time `json:"createdAt"`
}

func productJSON(p registry.Product) Product {
	return Product{
		ProductKey:          p.ProductKey,
		Name:                p.Name,
		DynamicRegistration: p.DynamicRegistration,
		DataFormat:          string(p.DataFormat),
		OnlineLifetimeSecs:  int64(p.OnlineLifetime / time.Second),
		CreatedAt:           p.CreatedAt.UTC(),
	}
}

type createProductRequest struct {
	ProductKey          string  `json:"productKey"`
	ProductSecret       string  `json:"productSecret"`
	Name                string  `json:"name"`
	DynamicRegistration bool    `json:"dynamicRegistration"`
	DataFormat          *string `json:"dataFormat"`
	OnlineLifetimeSecs  *int64  `json:"onlineLifetimeSeconds"`
}

type updateProductRequest struct {
	Name                *string `json:"name"`
	DynamicRegistration *bool   `json:"dynamicRegistration"`
	DataFormat          *string `json:"dataFormat"`
	OnlineLifetimeSecs  *int64  `json:"onlineLifetimeSeconds"`
}

func validateName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("%w: name must be 1..%d bytes", registry.ErrInvalid, maxNameLen)
	}
	return nil
}

func parseDataFormat(s string) (registry.DataFormat, error) {
	f := registry.DataFormat(s)
	if !f.Valid() {
		return "", fmt.Errorf("%w: dataFormat must be \"json\" or \"cbor\"", registry.ErrInvalid)
	}
	return f, nil
}

func parseLifetime(secs int64) (time.Duration, error) {
	if secs != 0 && (secs < minLifetimeSeconds || secs > maxLifetimeSeconds) {
		return 0, fmt.Errorf("%w: onlineLifetimeSeconds must be 0 (gateway default) or %d..%d",
			registry.ErrInvalid, minLifetimeSeconds, maxLifetimeSeconds)
	}
	return time.Duration(secs) * time.Second, nil
}

func (s *server) createProduct(w http.ResponseWriter, r *http.Request) error {
	var req createProductRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	p := registry.Product{
		ProductKey:          req.ProductKey,
		ProductSecret:       registry.Secret(req.ProductSecret),
		Name:                req.Name,
		DynamicRegistration: req.DynamicRegistration,
		DataFormat:          registry.FormatJSON,
		CreatedAt:           s.now(),
	}
	if p.ProductKey == "" {
		p.ProductKey = registry.NewProductKey()
	} else if err := registry.ValidateProductKey(p.ProductKey); err != nil {
		return err
	}
	if req.ProductSecret == "" {
		p.ProductSecret = registry.NewSecret()
	} else if err := registry.ValidateSecret(req.ProductSecret); err != nil {
		return fmt.Errorf("productSecret: %w", err)
	}
	if err := validateName(p.Name); err != nil {
		return err
	}
	if req.DataFormat != nil {
		f, err := parseDataFormat(*req.DataFormat)
		if err != nil {
			return err
		}
		p.DataFormat = f
	}
	if req.OnlineLifetimeSecs != nil {
		d, err := parseLifetime(*req.OnlineLifetimeSecs)
		if err != nil {
			return err
		}
		p.OnlineLifetime = d
	}
	if err := s.o.Registry.CreateProduct(r.Context(), p); err != nil {
		return storeError(err, fmt.Sprintf("product %q", p.ProductKey))
	}
	s.o.OnDeviceChange(p.ProductKey, "") // drop cached "not found" answers
	s.audit(r, "product created", "pk", p.ProductKey)
	out := productJSON(p)
	out.ProductSecret = p.ProductSecret.Reveal()
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *server) listProducts(w http.ResponseWriter, r *http.Request) error {
	if err := allowQuery(r, "limit", "cursor", "after"); err != nil {
		return err
	}
	limit, err := parseLimit(r)
	if err != nil {
		return err
	}
	after, err := pageCursor(r.URL.Query())
	if err != nil {
		return err
	}
	ps, err := s.o.Registry.ListProducts(r.Context(), registry.Page{Limit: limit, After: after})
	if err != nil {
		return fmt.Errorf("list products: %w", err)
	}
	out := List[Product]{Items: make([]Product, 0, len(ps))}
	for _, p := range ps {
		out.Items = append(out.Items, productJSON(p))
	}
	if len(ps) == limit {
		out.NextCursor = ps[len(ps)-1].ProductKey
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// loadProduct validates the {productKey} path value and loads the product.
func (s *server) loadProduct(r *http.Request) (registry.Product, error) {
	pk := r.PathValue("productKey")
	if err := registry.ValidateProductKey(pk); err != nil {
		return registry.Product{}, err
	}
	p, err := s.o.Registry.GetProduct(r.Context(), pk)
	if err != nil {
		return registry.Product{}, storeError(err, fmt.Sprintf("product %q", pk))
	}
	return p, nil
}

func (s *server) getProduct(w http.ResponseWriter, r *http.Request) error {
	p, err := s.loadProduct(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, productJSON(p))
	return nil
}

// updateProduct applies a partial update. Read-modify-write without a
// version check: of two concurrent PATCHes of one product the last wins.
func (s *server) updateProduct(w http.ResponseWriter, r *http.Request) error {
	var req updateProductRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	p, err := s.loadProduct(r)
	if err != nil {
		return err
	}
	if req.Name != nil {
		if err := validateName(*req.Name); err != nil {
			return err
		}
		p.Name = *req.Name
	}
	if req.DynamicRegistration != nil {
		p.DynamicRegistration = *req.DynamicRegistration
	}
	if req.DataFormat != nil {
		if p.DataFormat, err = parseDataFormat(*req.DataFormat); err != nil {
			return err
		}
	}
	if req.OnlineLifetimeSecs != nil {
		if p.OnlineLifetime, err = parseLifetime(*req.OnlineLifetimeSecs); err != nil {
			return err
		}
	}
	if err := s.o.Registry.UpdateProduct(r.Context(), p); err != nil {
		return storeError(err, fmt.Sprintf("product %q", p.ProductKey))
	}
	s.o.OnDeviceChange(p.ProductKey, "")
	s.audit(r, "product updated", "pk", p.ProductKey)
	writeJSON(w, http.StatusOK, productJSON(p))
	return nil
}

func (s *server) deleteProduct(w http.ResponseWriter, r *http.Request) error {
	pk := r.PathValue("productKey")
	if err := registry.ValidateProductKey(pk); err != nil {
		return err
	}
	if err := s.o.Registry.DeleteProduct(r.Context(), pk); err != nil {
		if errors.Is(err, registry.ErrConflict) {
			return &clientError{msg: fmt.Sprintf("product %q still has devices; delete them first", pk), err: err}
		}
		return storeError(err, fmt.Sprintf("product %q", pk))
	}
	s.o.OnDeviceChange(pk, "")
	s.audit(r, "product deleted", "pk", pk)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// audit logs a successful change with the ID of the API key that made it.
func (s *server) audit(r *http.Request, msg string, args ...any) {
	s.log.Info(msg, append(args, "apiKeyID", requestKeyID(r.Context()))...)
}

// allowQuery rejects query parameters other than names (typos such as
// ?product= would otherwise silently widen a listing).
func allowQuery(r *http.Request, names ...string) error {
	for k := range r.URL.Query() {
		if !slices.Contains(names, k) {
			return badRequest("unknown query parameter %q", k)
		}
	}
	return nil
}
