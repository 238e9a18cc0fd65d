package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/coapgate/coapgate/internal/apikey"
)

// CreateAPIKey implements apikey.Store. A zero CreatedAt is stamped with the
// current time. A duplicate ID or hash fails with the driver's constraint
// error (apikey has no conflict sentinel).
func (s *Store) CreateAPIKey(ctx context.Context, k apikey.Key) error {
	if _, err := s.writer.ExecContext(ctx,
		`INSERT INTO api_keys (id, name, hash, created_at) VALUES (?, ?, ?, ?)`,
		k.ID, k.Name, k.Hash, createdNanos(k.CreatedAt)); err != nil {
		return fmt.Errorf("sqlitestore: create api key %s: %w", k.ID, err)
	}
	return nil
}

// FindAPIKey implements apikey.Store.
func (s *Store) FindAPIKey(ctx context.Context, hash []byte) (apikey.Key, error) {
	k, err := scanAPIKey(s.reader.QueryRowContext(ctx,
		`SELECT id, name, hash, created_at FROM api_keys WHERE hash = ?`, hash))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return apikey.Key{}, fmt.Errorf("sqlitestore: find api key: %w", apikey.ErrNotFound)
	case err != nil:
		return apikey.Key{}, fmt.Errorf("sqlitestore: find api key: %w", err)
	}
	return k, nil
}

// ListAPIKeys implements apikey.Store, oldest first.
func (s *Store) ListAPIKeys(ctx context.Context) ([]apikey.Key, error) {
	rows, err := s.reader.QueryContext(ctx,
		`SELECT id, name, hash, created_at FROM api_keys ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: list api keys: %w", err)
	}
	defer rows.Close()
	var out []apikey.Key
	for rows.Next() {
		k, err := scanAPIKey(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: list api keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: list api keys: %w", err)
	}
	return out, nil
}

// DeleteAPIKey implements apikey.Store.
func (s *Store) DeleteAPIKey(ctx context.Context, id string) error {
	res, err := s.writer.ExecContext(ctx, `DELETE FROM api_keys WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("sqlitestore: delete api key %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlitestore: delete api key %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlitestore: delete api key %s: %w", id, apikey.ErrNotFound)
	}
	return nil
}

// scanAPIKey reads one api_keys row.
func scanAPIKey(r rowScanner) (apikey.Key, error) {
	var (
		k       apikey.Key
		created int64
	)
	if err := r.Scan(&k.ID, &k.Name, &k.Hash, &created); err != nil {
		return apikey.Key{}, err
	}
	k.CreatedAt = fromNanos(created)
	return k, nil
}
