package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/coapgate/coapgate/internal/registry"
)

const productColumns = `product_key, product_secret, name, dynamic_registration,
	data_format, online_lifetime_ms, created_at,
	retention_messages_ms, retention_points_ms, retention_events_ms, retention_commands_ms`

const deviceColumns = `product_key, device_key, device_secret, asset_id, enabled,
	generation, created_at, last_seen_at, last_address, incarnation`

// CreateProduct implements registry.Store. A zero CreatedAt is stamped with
// the current time.
func (s *Store) CreateProduct(ctx context.Context, p registry.Product) error {
	_, err := s.writer.ExecContext(ctx,
		`INSERT INTO products (`+productColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		p.ProductKey, s.box.SealString(p.ProductSecret.Reveal(), productSecretAAD(p.ProductKey)), p.Name, boolInt(p.DynamicRegistration),
		string(p.DataFormat), p.OnlineLifetime.Milliseconds(), createdNanos(p.CreatedAt),
		retentionMS(p.Retention.Messages), retentionMS(p.Retention.Points),
		retentionMS(p.Retention.Events), retentionMS(p.Retention.Commands))
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("sqlitestore: create product %s: %w", p.ProductKey, registry.ErrConflict)
	case err != nil:
		return fmt.Errorf("sqlitestore: create product %s: %w", p.ProductKey, err)
	}
	return nil
}

// GetProduct implements registry.Store.
func (s *Store) GetProduct(ctx context.Context, productKey string) (registry.Product, error) {
	row := s.reader.QueryRowContext(ctx,
		`SELECT `+productColumns+` FROM products WHERE product_key = ?`, productKey)
	p, err := s.scanProduct(row)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return registry.Product{}, fmt.Errorf("sqlitestore: get product %s: %w", productKey, registry.ErrNotFound)
	case err != nil:
		return registry.Product{}, fmt.Errorf("sqlitestore: get product %s: %w", productKey, err)
	}
	return p, nil
}

// ListProducts implements registry.Store.
func (s *Store) ListProducts(ctx context.Context, page registry.Page) ([]registry.Product, error) {
	limit := registryLimit(page.Limit)
	var (
		rows *sql.Rows
		err  error
	)
	if page.After == "" {
		rows, err = s.reader.QueryContext(ctx,
			`SELECT `+productColumns+` FROM products ORDER BY product_key LIMIT ?`, limit)
	} else {
		rows, err = s.reader.QueryContext(ctx,
			`SELECT `+productColumns+` FROM products WHERE product_key > ?
			ORDER BY product_key LIMIT ?`, page.After, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: list products: %w", err)
	}
	defer rows.Close()
	var out []registry.Product
	for rows.Next() {
		p, err := s.scanProduct(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: list products: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: list products: %w", err)
	}
	return out, nil
}

// UpdateProduct implements registry.Store.
func (s *Store) UpdateProduct(ctx context.Context, p registry.Product) error {
	res, err := s.writer.ExecContext(ctx,
		`UPDATE products SET product_secret = ?, name = ?, dynamic_registration = ?,
			data_format = ?, online_lifetime_ms = ?,
			retention_messages_ms = ?, retention_points_ms = ?, retention_events_ms = ?, retention_commands_ms = ?
		WHERE product_key = ?`,
		s.box.SealString(p.ProductSecret.Reveal(), productSecretAAD(p.ProductKey)), p.Name, boolInt(p.DynamicRegistration),
		string(p.DataFormat), p.OnlineLifetime.Milliseconds(),
		retentionMS(p.Retention.Messages), retentionMS(p.Retention.Points),
		retentionMS(p.Retention.Events), retentionMS(p.Retention.Commands), p.ProductKey)
	if err := affectedOne(res, err); err != nil {
		return fmt.Errorf("sqlitestore: update product %s: %w", p.ProductKey, err)
	}
	return nil
}

// DeleteProduct implements registry.Store. The devices' foreign key makes
// the delete fail while the product has devices.
func (s *Store) DeleteProduct(ctx context.Context, productKey string) error {
	res, err := s.writer.ExecContext(ctx, `DELETE FROM products WHERE product_key = ?`, productKey)
	if isForeignKeyViolation(err) {
		return fmt.Errorf("sqlitestore: delete product %s: has devices: %w", productKey, registry.ErrConflict)
	}
	if err := affectedOne(res, err); err != nil {
		return fmt.Errorf("sqlitestore: delete product %s: %w", productKey, err)
	}
	return nil
}

// CreateDevice implements registry.Store. A zero CreatedAt is stamped with
// the current time, a zero Incarnation with a new random one; LastSeenAt and
// LastAddress are stored as given.
func (s *Store) CreateDevice(ctx context.Context, d registry.Device) error {
	if d.Incarnation == 0 {
		d.Incarnation = registry.NewIncarnation()
	}
	var lastSeen sql.NullInt64
	if !d.LastSeenAt.IsZero() {
		lastSeen = sql.NullInt64{Int64: d.LastSeenAt.UnixNano(), Valid: true}
	}
	_, err := s.writer.ExecContext(ctx,
		`INSERT INTO devices (`+deviceColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.ProductKey, d.DeviceKey, s.box.SealString(d.DeviceSecret.Reveal(), deviceSecretAAD(d.ProductKey, d.DeviceKey)), d.AssetID, boolInt(d.Enabled),
		int64(d.Generation), createdNanos(d.CreatedAt), lastSeen, d.LastAddress, int64(d.Incarnation))
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("sqlitestore: create device %s/%s: %w", d.ProductKey, d.DeviceKey, registry.ErrConflict)
	case isForeignKeyViolation(err):
		return fmt.Errorf("sqlitestore: create device %s/%s: product: %w", d.ProductKey, d.DeviceKey, registry.ErrNotFound)
	case err != nil:
		return fmt.Errorf("sqlitestore: create device %s/%s: %w", d.ProductKey, d.DeviceKey, err)
	}
	return nil
}

// GetDevice implements registry.Store.
func (s *Store) GetDevice(ctx context.Context, productKey, deviceKey string) (registry.Device, error) {
	row := s.reader.QueryRowContext(ctx,
		`SELECT `+deviceColumns+` FROM devices WHERE product_key = ? AND device_key = ?`,
		productKey, deviceKey)
	d, err := s.scanDevice(row)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return registry.Device{}, fmt.Errorf("sqlitestore: get device %s/%s: %w", productKey, deviceKey, registry.ErrNotFound)
	case err != nil:
		return registry.Device{}, fmt.Errorf("sqlitestore: get device %s/%s: %w", productKey, deviceKey, err)
	}
	return d, nil
}

// ListDevices implements registry.Store. An unknown product lists no
// devices. With an empty productKey, page.After is "productKey/deviceKey",
// split at the first '/'.
func (s *Store) ListDevices(ctx context.Context, productKey string, page registry.Page) ([]registry.Device, error) {
	limit := registryLimit(page.Limit)
	var (
		rows *sql.Rows
		err  error
	)
	switch {
	case productKey != "":
		rows, err = s.reader.QueryContext(ctx,
			`SELECT `+deviceColumns+` FROM devices WHERE product_key = ? AND device_key > ?
			ORDER BY device_key LIMIT ?`, productKey, page.After, limit)
	case page.After == "":
		rows, err = s.reader.QueryContext(ctx,
			`SELECT `+deviceColumns+` FROM devices ORDER BY product_key, device_key LIMIT ?`, limit)
	default:
		pk, dk, _ := strings.Cut(page.After, "/")
		rows, err = s.reader.QueryContext(ctx,
			`SELECT `+deviceColumns+` FROM devices WHERE (product_key, device_key) > (?, ?)
			ORDER BY product_key, device_key LIMIT ?`, pk, dk, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: list devices %s: %w", productKey, err)
	}
	defer rows.Close()
	var out []registry.Device
	for rows.Next() {
		d, err := s.scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: list devices %s: %w", productKey, err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: list devices %s: %w", productKey, err)
	}
	return out, nil
}

// UpdateDevice implements registry.Store.
func (s *Store) UpdateDevice(ctx context.Context, d registry.Device) error {
	res, err := s.writer.ExecContext(ctx,
		`UPDATE devices SET device_secret = ?, asset_id = ?, enabled = ?, generation = ?
		WHERE product_key = ? AND device_key = ?`,
		s.box.SealString(d.DeviceSecret.Reveal(), deviceSecretAAD(d.ProductKey, d.DeviceKey)), d.AssetID, boolInt(d.Enabled), int64(d.Generation),
		d.ProductKey, d.DeviceKey)
	if err := affectedOne(res, err); err != nil {
		return fmt.Errorf("sqlitestore: update device %s/%s: %w", d.ProductKey, d.DeviceKey, err)
	}
	return nil
}

// DeleteDevice implements registry.Store.
func (s *Store) DeleteDevice(ctx context.Context, productKey, deviceKey string) error {
	res, err := s.writer.ExecContext(ctx,
		`DELETE FROM devices WHERE product_key = ? AND device_key = ?`, productKey, deviceKey)
	if err := affectedOne(res, err); err != nil {
		return fmt.Errorf("sqlitestore: delete device %s/%s: %w", productKey, deviceKey, err)
	}
	return nil
}

// touchDeviceSQL moves last contact forward only: a late, older presence
// (two flushes racing) never overwrites a newer one.
const touchDeviceSQL = `UPDATE devices SET last_seen_at = ?1, last_address = ?2
	WHERE product_key = ?3 AND device_key = ?4
	AND (last_seen_at IS NULL OR last_seen_at <= ?1)`

// TouchDevices implements registry.Store in one transaction. Unknown
// devices are skipped, and a presence older than the stored one is ignored.
func (s *Store) TouchDevices(ctx context.Context, seen []registry.Presence) (err error) {
	if len(seen) == 0 {
		return nil
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: touch devices: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the first error is the one to report
		}
	}()
	stmt := tx.StmtContext(ctx, s.touchDevice)
	defer stmt.Close()
	for _, p := range seen {
		if _, err := stmt.ExecContext(ctx, toNanos(p.SeenAt), p.Address, p.ProductKey, p.DeviceKey); err != nil {
			return fmt.Errorf("sqlitestore: touch device %s/%s: %w", p.ProductKey, p.DeviceKey, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: touch devices: commit: %w", err)
	}
	return nil
}

// affectedOne turns an Exec outcome into nil, the error, or
// registry.ErrNotFound when no row was affected.
func affectedOne(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return registry.ErrNotFound
	}
	return nil
}

// scanProduct reads one row of productColumns.
func (s *Store) scanProduct(r rowScanner) (registry.Product, error) {
	var (
		p                 registry.Product
		secret, format    string
		dynamic           int64
		lifetimeMS, creat int64
		ret               [4]sql.NullInt64
	)
	if err := r.Scan(&p.ProductKey, &secret, &p.Name, &dynamic, &format, &lifetimeMS, &creat,
		&ret[0], &ret[1], &ret[2], &ret[3]); err != nil {
		return registry.Product{}, err
	}
	p.Retention = registry.Retention{Messages: retentionDur(ret[0]), Points: retentionDur(ret[1]),
		Events: retentionDur(ret[2]), Commands: retentionDur(ret[3])}
	plain, err := s.openSecret(secret, productSecretAAD(p.ProductKey))
	if err != nil {
		return registry.Product{}, err
	}
	p.ProductSecret = registry.Secret(plain)
	p.DynamicRegistration = dynamic != 0
	p.DataFormat = registry.DataFormat(format)
	p.OnlineLifetime = time.Duration(lifetimeMS) * time.Millisecond
	p.CreatedAt = fromNanos(creat)
	return p, nil
}

// retentionMS is the stored form of a retention override (NULL: inherit).
func retentionMS(d *time.Duration) any {
	if d == nil {
		return nil
	}
	return d.Milliseconds()
}

// retentionDur reads a stored retention override.
func retentionDur(v sql.NullInt64) *time.Duration {
	if !v.Valid {
		return nil
	}
	d := time.Duration(v.Int64) * time.Millisecond
	return &d
}

// scanDevice reads one row of deviceColumns.
func (s *Store) scanDevice(r rowScanner) (registry.Device, error) {
	var (
		d                 registry.Device
		secret            string
		enabled, gen, cre int64
		incarnation       int64
		lastSeen          sql.NullInt64
	)
	if err := r.Scan(&d.ProductKey, &d.DeviceKey, &secret, &d.AssetID, &enabled,
		&gen, &cre, &lastSeen, &d.LastAddress, &incarnation); err != nil {
		return registry.Device{}, err
	}
	plain, err := s.openSecret(secret, deviceSecretAAD(d.ProductKey, d.DeviceKey))
	if err != nil {
		return registry.Device{}, err
	}
	d.DeviceSecret = registry.Secret(plain)
	d.Enabled = enabled != 0
	d.Generation = uint32(gen)
	d.Incarnation = uint64(incarnation)
	d.CreatedAt = fromNanos(cre)
	if lastSeen.Valid {
		d.LastSeenAt = fromNanos(lastSeen.Int64)
	}
	return d, nil
}
