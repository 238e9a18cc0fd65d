package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// DeviceCreator creates devices on first activation of a product that
// allows dynamic registration (docs/protocol.md §2, secureMode 3).
type DeviceCreator interface {
	CreateDevice(ctx context.Context, d registry.Device) error
}

// pskIdentity returns the PSK identity of the request's DTLS session, if
// the session was authenticated by one (the session is the device).
func pskIdentity(req *coapx.Request) (*dtlspsk.Identity, bool) {
	if req.Session == nil {
		return nil, false
	}
	id, ok := req.Session.Identity().(*dtlspsk.Identity)
	return id, ok && id != nil
}

// LookupPSK returns the PSK of a DTLS identity (docs/protocol.md §2): for
// secureMode 2 SHA-256(deviceSecret)[8:24] of an existing, enabled
// device; for secureMode 3 SHA-256(productSecret)[8:24] of a product that
// allows dynamic registration (the device may not exist yet, but must not
// be disabled if it does). Refusals are *dtlspsk.Error. The device lookup
// goes through the device cache.
func (g *Gateway) LookupPSK(ctx context.Context, id dtlspsk.Identity) ([]byte, error) {
	now := g.o.Now()
	if id.SecureMode == dtlspsk.ModeProduct {
		prod, err := g.o.Registry.GetProduct(ctx, id.ProductKey)
		if err != nil {
			return nil, g.pskStoreErr(err, dtlspsk.ReasonUnknownProduct, id.ProductKey)
		}
		if !prod.DynamicRegistration {
			return nil, &dtlspsk.Error{Reason: dtlspsk.ReasonModeNotAllowed, Msg: "product " + id.ProductKey + " does not allow dynamic registration"}
		}
		dev, err := g.cache.get(ctx, id.ProductKey, id.DeviceKey, now)
		switch {
		case isStoreTrouble(err):
			return nil, g.pskStoreErr(err, "", "")
		case err == nil && !dev.dev.Enabled:
			return nil, &dtlspsk.Error{Reason: dtlspsk.ReasonDisabled, Msg: id.ProductKey + "/" + id.DeviceKey}
		}
		return dtlspsk.Key(prod.ProductSecret.Reveal()), nil
	}
	dev, err := g.cache.get(ctx, id.ProductKey, id.DeviceKey, now)
	if err != nil {
		if isStoreTrouble(err) {
			return nil, g.pskStoreErr(err, "", "")
		}
		// Which one is missing? Only asked on the refusal path.
		if _, perr := g.o.Registry.GetProduct(ctx, id.ProductKey); perr != nil {
			return nil, g.pskStoreErr(perr, dtlspsk.ReasonUnknownProduct, id.ProductKey)
		}
		return nil, &dtlspsk.Error{Reason: dtlspsk.ReasonUnknownDevice, Msg: id.ProductKey + "/" + id.DeviceKey}
	}
	if !dev.dev.Enabled {
		return nil, &dtlspsk.Error{Reason: dtlspsk.ReasonDisabled, Msg: id.ProductKey + "/" + id.DeviceKey}
	}
	return dtlspsk.Key(dev.dev.DeviceSecret.Reveal()), nil
}

func (g *Gateway) pskStoreErr(err error, notFoundReason, what string) error {
	if errors.Is(err, registry.ErrNotFound) && notFoundReason != "" {
		return &dtlspsk.Error{Reason: notFoundReason, Msg: what}
	}
	g.log.Error("psk lookup failed", "err", err)
	return &dtlspsk.Error{Reason: dtlspsk.ReasonStore, Msg: "registry unavailable"}
}

// SessionUp records that a DTLS-PSK session of a device was established:
// its first authenticated exchange (docs/protocol.md §2, online status).
func (g *Gateway) SessionUp(id *dtlspsk.Identity, peer netip.AddrPort, now time.Time) {
	if g.o.Presence == nil || id == nil || id.SecureMode != dtlspsk.ModeDevice {
		return
	}
	if g.o.Presence.Seen(id.ProductKey, id.DeviceKey, peer.String(), g.o.Transport, id.Lifetime, now) {
		g.log.Info("device online", "productKey", id.ProductKey, "deviceKey", id.DeviceKey, "peer", peer.String())
	}
}

// authenticateSession authenticates an uplink on a secureMode 2 session:
// the session is the device; its record must still exist and be enabled.
func (g *Gateway) authenticateSession(ctx context.Context, req *coapx.Request, psk *dtlspsk.Identity) (identity, *coapx.Response) {
	id, err := g.cache.get(ctx, psk.ProductKey, psk.DeviceKey, req.Received)
	switch {
	case isStoreTrouble(err):
		g.log.Error("device lookup failed", "productKey", psk.ProductKey, "deviceKey", psk.DeviceKey, "err", err)
		return identity{}, g.unavailable()
	case err != nil:
		return identity{}, g.tokenFail(req, reasonUnknownDevice, codes.Unauthorized, psk.ProductKey, psk.DeviceKey)
	case !id.dev.Enabled:
		return identity{}, g.tokenFail(req, reasonDisabled, codes.Forbidden, psk.ProductKey, psk.DeviceKey)
	}
	return id, nil
}

// routeActivation serves a secureMode 3 session, which may do nothing but
// GET /topic/ext/session/{pk}/{dk}/thing/activate/info of its own identity
// (docs/protocol.md §2): anything else is 4.03.
func (g *Gateway) routeActivation(ctx context.Context, req *coapx.Request, psk *dtlspsk.Identity) *coapx.Response {
	want := [...]string{"topic", "ext", "session", psk.ProductKey, psk.DeviceKey, "thing", "activate", "info"}
	if req.Code != codes.GET || !slices.Equal(req.Path, want[:]) {
		g.m.authFailures.WithLabelValues(reasonACL).Inc()
		g.log.Info("activation session refused a request", "productKey", psk.ProductKey, "deviceKey", psk.DeviceKey, "path", strings.Join(req.Path, "/"), "peer", req.Peer.String())
		return &coapx.Response{Code: codes.Forbidden}
	}
	return g.activate(ctx, req, psk)
}

// activateReply is the activation answer (docs/protocol.md §2), fields in order.
type activateReply struct {
	ID      string         `json:"id"`
	Version string         `json:"version"`
	Method  string         `json:"method"`
	Params  activateParams `json:"params"`
}

type activateParams struct {
	AssetID      string `json:"assetId"`
	ProductKey   string `json:"productKey"`
	DeviceKey    string `json:"deviceKey"`
	DeviceSecret string `json:"deviceSecret"`
}

// activate returns the device's secret, creating the device first when it
// does not exist (the handshake already checked that the product allows
// dynamic registration). Idempotent: the same secret until it is rotated.
func (g *Gateway) activate(ctx context.Context, req *coapx.Request, psk *dtlspsk.Identity) *coapx.Response {
	pk, dk := psk.ProductKey, psk.DeviceKey
	id, err := g.cache.get(ctx, pk, dk, req.Received)
	if errors.Is(err, registry.ErrNotFound) {
		if g.o.Devices == nil {
			return &coapx.Response{Code: codes.Forbidden}
		}
		dev := registry.Device{
			ProductKey: pk, DeviceKey: dk, DeviceSecret: registry.NewSecret(),
			AssetID: registry.NewDeviceKey(), Enabled: true, CreatedAt: req.Received,
		}
		cerr := g.o.Devices.CreateDevice(ctx, dev)
		if cerr != nil && !errors.Is(cerr, registry.ErrConflict) {
			g.log.Error("activation: create device failed", "productKey", pk, "deviceKey", dk, "err", cerr)
			return g.unavailable()
		}
		// Created here, or by a concurrent activation: read it back.
		g.cache.Invalidate(pk, dk)
		id, err = g.cache.get(ctx, pk, dk, req.Received)
		if err == nil && cerr == nil {
			g.log.Info("device registered by activation", "productKey", pk, "deviceKey", dk, "peer", req.Peer.String())
		}
	}
	switch {
	case isStoreTrouble(err) || errors.Is(err, registry.ErrNotFound):
		g.log.Error("activation: device lookup failed", "productKey", pk, "deviceKey", dk, "err", err)
		return g.unavailable()
	case !id.dev.Enabled:
		return &coapx.Response{Code: codes.Forbidden}
	}
	assetID := id.dev.AssetID
	if assetID == "" {
		assetID = dk
	}
	body, err := json.Marshal(activateReply{
		ID: strconv.FormatUint(uint64(req.MessageID), 10), Version: "1.0", Method: "thing.activate.info",
		Params: activateParams{AssetID: assetID, ProductKey: pk, DeviceKey: dk, DeviceSecret: id.dev.DeviceSecret.Reveal()},
	})
	if err != nil {
		return &coapx.Response{Code: codes.InternalServerError}
	}
	g.m.authOK.Inc()
	r := &coapx.Response{Code: codes.Content, Payload: body}
	return r.SetUint(optContentFormat, uint32(cfJSON))
}
