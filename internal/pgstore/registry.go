package pgstore

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coapgate/coapgate/internal/registry"
)

const productColumns = `product_key, product_secret, name, dynamic_registration,
	data_format, online_lifetime_ms, created_at,
	retention_messages_ms, retention_points_ms, retention_events_ms, retention_commands_ms`

const deviceColumns = `product_key, device_key, device_secret, asset_id, enabled,
	generation, created_at, last_seen_at, last_address, incarnation`

// CreateProduct implements registry.Store.
func (s *Store) CreateProduct(ctx context.Context, p registry.Product) error {
	_, err := s.pool.Exec(ctx,
		`INSERT INTO products (`+productColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		p.ProductKey, s.box.SealString(p.ProductSecret.Reveal(), productSecretAAD(p.ProductKey)), p.Name,
		p.DynamicRegistration, string(p.DataFormat), p.OnlineLifetime.Milliseconds(), createdNanos(p.CreatedAt),
		retentionMS(p.Retention.Messages), retentionMS(p.Retention.Points),
		retentionMS(p.Retention.Events), retentionMS(p.Retention.Commands))
	switch {
	case isUniqueViolation(err):
		return errorf("pgstore: create product %s: %w", p.ProductKey, registry.ErrConflict)
	case err != nil:
		return errorf("pgstore: create product %s: %w", p.ProductKey, err)
	}
	return nil
}

// GetProduct implements registry.Store.
func (s *Store) GetProduct(ctx context.Context, productKey string) (registry.Product, error) {
	p, err := s.scanProduct(s.pool.QueryRow(ctx,
		`SELECT `+productColumns+` FROM products WHERE product_key = $1`, productKey))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return registry.Product{}, errorf("pgstore: get product %s: %w", productKey, registry.ErrNotFound)
	case err != nil:
		return registry.Product{}, errorf("pgstore: get product %s: %w", productKey, err)
	}
	return p, nil
}

// ListProducts implements registry.Store.
func (s *Store) ListProducts(ctx context.Context, page registry.Page) ([]registry.Product, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+productColumns+` FROM products WHERE product_key > $1
		ORDER BY product_key LIMIT $2`, page.After, registryLimit(page.Limit))
	if err != nil {
		return nil, errorf("pgstore: list products: %w", err)
	}
	defer rows.Close()
	var out []registry.Product
	for rows.Next() {
		p, err := s.scanProduct(rows)
		if err != nil {
			return nil, errorf("pgstore: list products: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("pgstore: list products: %w", err)
	}
	return out, nil
}

// UpdateProduct implements registry.Store.
func (s *Store) UpdateProduct(ctx context.Context, p registry.Product) error {
	tag, err := s.pool.Exec(ctx,
		`UPDATE products SET product_secret = $1, name = $2, dynamic_registration = $3,
			data_format = $4, online_lifetime_ms = $5, retention_messages_ms = $6, retention_points_ms = $7,
			retention_events_ms = $8, retention_commands_ms = $9
		WHERE product_key = $10`,
		s.box.SealString(p.ProductSecret.Reveal(), productSecretAAD(p.ProductKey)), p.Name, p.DynamicRegistration,
		string(p.DataFormat), p.OnlineLifetime.Milliseconds(),
		retentionMS(p.Retention.Messages), retentionMS(p.Retention.Points),
		retentionMS(p.Retention.Events), retentionMS(p.Retention.Commands), p.ProductKey)
	if err := affectedOne(tag, err); err != nil {
		return errorf("pgstore: update product %s: %w", p.ProductKey, err)
	}
	return nil
}

// DeleteProduct implements registry.Store; it fails with ErrConflict while
// the product has devices.
func (s *Store) DeleteProduct(ctx context.Context, productKey string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM products WHERE product_key = $1`, productKey)
	if isForeignKeyViolation(err) {
		return errorf("pgstore: delete product %s: has devices: %w", productKey, registry.ErrConflict)
	}
	if err := affectedOne(tag, err); err != nil {
		return errorf("pgstore: delete product %s: %w", productKey, err)
	}
	return nil
}

// CreateDevice implements registry.Store. A zero Incarnation is replaced by
// a new random one (stored as its int64 bit pattern).
func (s *Store) CreateDevice(ctx context.Context, d registry.Device) error {
	if d.Incarnation == 0 {
		d.Incarnation = registry.NewIncarnation()
	}
	var lastSeen *int64
	if !d.LastSeenAt.IsZero() {
		n := d.LastSeenAt.UnixNano()
		lastSeen = &n
	}
	_, err := s.pool.Exec(ctx,
		`INSERT INTO devices (`+deviceColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		d.ProductKey, d.DeviceKey, s.box.SealString(d.DeviceSecret.Reveal(), deviceSecretAAD(d.ProductKey, d.DeviceKey)),
		d.AssetID, d.Enabled, int64(d.Generation), createdNanos(d.CreatedAt), lastSeen, d.LastAddress, int64(d.Incarnation))
	switch {
	case isUniqueViolation(err):
		return errorf("pgstore: create device %s/%s: %w", d.ProductKey, d.DeviceKey, registry.ErrConflict)
	case isForeignKeyViolation(err):
		return errorf("pgstore: create device %s/%s: product: %w", d.ProductKey, d.DeviceKey, registry.ErrNotFound)
	case err != nil:
		return errorf("pgstore: create device %s/%s: %w", d.ProductKey, d.DeviceKey, err)
	}
	return nil
}

// GetDevice implements registry.Store.
func (s *Store) GetDevice(ctx context.Context, productKey, deviceKey string) (registry.Device, error) {
	d, err := s.scanDevice(s.pool.QueryRow(ctx,
		`SELECT `+deviceColumns+` FROM devices WHERE product_key = $1 AND device_key = $2`, productKey, deviceKey))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return registry.Device{}, errorf("pgstore: get device %s/%s: %w", productKey, deviceKey, registry.ErrNotFound)
	case err != nil:
		return registry.Device{}, errorf("pgstore: get device %s/%s: %w", productKey, deviceKey, err)
	}
	return d, nil
}

// ListDevices implements registry.Store. Keys compare bytewise (the
// columns' collation is "C"), as in the embedded adapter.
func (s *Store) ListDevices(ctx context.Context, productKey string, page registry.Page) ([]registry.Device, error) {
	limit := registryLimit(page.Limit)
	var (
		rows pgx.Rows
		err  error
	)
	switch {
	case productKey != "":
		rows, err = s.pool.Query(ctx, `SELECT `+deviceColumns+` FROM devices
			WHERE product_key = $1 AND device_key > $2
			ORDER BY device_key LIMIT $3`, productKey, page.After, limit)
	default:
		pk, dk, _ := strings.Cut(page.After, "/")
		rows, err = s.pool.Query(ctx, `SELECT `+deviceColumns+` FROM devices
			WHERE (product_key, device_key) > ($1, $2)
			ORDER BY product_key, device_key LIMIT $3`, pk, dk, limit)
	}
	if err != nil {
		return nil, errorf("pgstore: list devices %s: %w", productKey, err)
	}
	defer rows.Close()
	var out []registry.Device
	for rows.Next() {
		d, err := s.scanDevice(rows)
		if err != nil {
			return nil, errorf("pgstore: list devices %s: %w", productKey, err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("pgstore: list devices %s: %w", productKey, err)
	}
	return out, nil
}

// UpdateDevice implements registry.Store.
func (s *Store) UpdateDevice(ctx context.Context, d registry.Device) error {
	tag, err := s.pool.Exec(ctx,
		`UPDATE devices SET device_secret = $1, asset_id = $2, enabled = $3, generation = $4
		WHERE product_key = $5 AND device_key = $6`,
		s.box.SealString(d.DeviceSecret.Reveal(), deviceSecretAAD(d.ProductKey, d.DeviceKey)), d.AssetID, d.Enabled,
		int64(d.Generation), d.ProductKey, d.DeviceKey)
	if err := affectedOne(tag, err); err != nil {
		return errorf("pgstore: update device %s/%s: %w", d.ProductKey, d.DeviceKey, err)
	}
	return nil
}

// DeleteDevice implements registry.Store.
func (s *Store) DeleteDevice(ctx context.Context, productKey, deviceKey string) error {
	// Its shared presence goes with it: a device created again under the
	// same key starts offline.
	tag, err := s.pool.Exec(ctx, `WITH p AS (DELETE FROM device_presence WHERE product_key = $1 AND device_key = $2)
		DELETE FROM devices WHERE product_key = $1 AND device_key = $2`, productKey, deviceKey)
	if err := affectedOne(tag, err); err != nil {
		return errorf("pgstore: delete device %s/%s: %w", productKey, deviceKey, err)
	}
	return nil
}

// TouchDevices implements registry.Store in one batch round trip and
// transaction; last contact only moves forward.
func (s *Store) TouchDevices(ctx context.Context, seen []registry.Presence) error {
	if len(seen) == 0 {
		return nil
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var b pgx.Batch
		for _, p := range seen {
			b.Queue(`UPDATE devices SET last_seen_at = $1, last_address = $2
				WHERE product_key = $3 AND device_key = $4 AND (last_seen_at IS NULL OR last_seen_at <= $1)`,
				toNanos(p.SeenAt), p.Address, p.ProductKey, p.DeviceKey)
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return errorf("pgstore: touch devices: %w", err)
	}
	return nil
}

// affectedOne turns an Exec outcome into nil, the error, or
// registry.ErrNotFound when no row was affected.
func affectedOne(tag interface{ RowsAffected() int64 }, err error) error {
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return registry.ErrNotFound
	}
	return nil
}

func (s *Store) scanProduct(r pgx.Row) (registry.Product, error) {
	var (
		p                 registry.Product
		secret, format    string
		lifetimeMS, creat int64
		ret               [4]*int64
	)
	if err := r.Scan(&p.ProductKey, &secret, &p.Name, &p.DynamicRegistration, &format, &lifetimeMS, &creat,
		&ret[0], &ret[1], &ret[2], &ret[3]); err != nil {
		return registry.Product{}, err
	}
	plain, err := s.openSecret(secret, productSecretAAD(p.ProductKey))
	if err != nil {
		return registry.Product{}, err
	}
	p.ProductSecret = registry.Secret(plain)
	p.Retention = registry.Retention{Messages: retentionDur(ret[0]), Points: retentionDur(ret[1]),
		Events: retentionDur(ret[2]), Commands: retentionDur(ret[3])}
	p.DataFormat = registry.DataFormat(format)
	p.OnlineLifetime = time.Duration(lifetimeMS) * time.Millisecond
	p.CreatedAt = fromNanos(creat)
	return p, nil
}

func (s *Store) scanDevice(r pgx.Row) (registry.Device, error) {
	var (
		d        registry.Device
		secret   string
		gen, cre int64
		inc      int64
		lastSeen *int64
	)
	if err := r.Scan(&d.ProductKey, &d.DeviceKey, &secret, &d.AssetID, &d.Enabled,
		&gen, &cre, &lastSeen, &d.LastAddress, &inc); err != nil {
		return registry.Device{}, err
	}
	plain, err := s.openSecret(secret, deviceSecretAAD(d.ProductKey, d.DeviceKey))
	if err != nil {
		return registry.Device{}, err
	}
	d.DeviceSecret = registry.Secret(plain)
	d.Generation = uint32(gen)
	d.Incarnation = uint64(inc)
	d.CreatedAt = fromNanos(cre)
	if lastSeen != nil {
		d.LastSeenAt = fromNanos(*lastSeen)
	}
	return d, nil
}

// retentionMS is the stored form of a retention override (NULL: inherit).
func retentionMS(d *time.Duration) *int64 {
	if d == nil {
		return nil
	}
	ms := d.Milliseconds()
	return &ms
}

// retentionDur reads a stored retention override.
func retentionDur(v *int64) *time.Duration {
	if v == nil {
		return nil
	}
	d := time.Duration(*v) * time.Millisecond
	return &d
}
