package api

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/coapgate/coapgate/internal/registry"
)

// filterScanMax bounds the registry rows one filtered device listing reads:
// a filter that matches few devices answers a short (even empty) page with
// nextCursor set, and the client continues from there, so that no request
// scans the whole registry.
var filterScanMax = 5000 // a var for tests

// filterScanPage is the registry page size of a filtered scan.
const filterScanPage = 500

const maxDeviceQueryLen = 64

// deviceFilter narrows a device listing: by online state on this node
// (online=true|false) and by a case-insensitive substring of the device key
// or asset id (q).
type deviceFilter struct {
	online *bool
	q      string // lower case
}

// parseDeviceFilter reads online and q; ok is false when neither is set.
func parseDeviceFilter(v url.Values) (f deviceFilter, ok bool, err error) {
	switch o := v.Get("online"); o {
	case "":
	case "true", "false":
		b := o == "true"
		f.online = &b
	default:
		return f, false, badRequest("online must be true or false")
	}
	f.q = strings.ToLower(v.Get("q"))
	if len(f.q) > maxDeviceQueryLen {
		return f, false, badRequest("q longer than %d bytes", maxDeviceQueryLen)
	}
	return f, f.online != nil || f.q != "", nil
}

func (f deviceFilter) match(d Device) bool {
	if f.online != nil && d.Online != *f.online {
		return false
	}
	return f.q == "" || strings.Contains(strings.ToLower(d.DeviceKey), f.q) || strings.Contains(strings.ToLower(d.AssetID), f.q)
}

// listDevicesFiltered pages through the registry from after, keeping the
// devices f matches, until limit of them are found, the registry ends, or
// filterScanMax rows were read. products caches the products already read.
func (s *server) listDevicesFiltered(ctx context.Context, pk, after string, limit int, f deviceFilter, products map[string]registry.Product) (List[Device], error) {
	out := List[Device]{Items: []Device{}}
	cursor := func(d registry.Device) string {
		if pk != "" {
			return d.DeviceKey
		}
		return d.ProductKey + "/" + d.DeviceKey
	}
	for scanned := 0; scanned < filterScanMax; {
		n := min(filterScanPage, filterScanMax-scanned)
		ds, err := s.o.Registry.ListDevices(ctx, pk, registry.Page{Limit: n, After: after})
		if err != nil {
			return out, fmt.Errorf("list devices: %w", err)
		}
		for _, d := range ds {
			scanned++
			after = cursor(d)
			p, ok := products[d.ProductKey]
			if !ok {
				if p, err = s.o.Registry.GetProduct(ctx, d.ProductKey); err != nil {
					return out, fmt.Errorf("product %q of device %q: %w", d.ProductKey, d.DeviceKey, err)
				}
				products[d.ProductKey] = p
			}
			if j := s.deviceJSON(d, p); f.match(j) {
				out.Items = append(out.Items, j)
				if len(out.Items) == limit {
					out.NextCursor = after
					return out, nil
				}
			}
		}
		if len(ds) < n {
			return out, nil // the registry ended
		}
	}
	out.NextCursor = after // scan budget spent; more may match further on
	return out, nil
}
