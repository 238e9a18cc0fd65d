package pgstore

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/coapgate/coapgate/internal/apikey"
)

// CreateAPIKey implements apikey.Store.
func (s *Store) CreateAPIKey(ctx context.Context, k apikey.Key) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO api_keys (id, name, hash, created_at) VALUES ($1, $2, $3, $4)`,
		k.ID, k.Name, k.Hash, createdNanos(k.CreatedAt)); err != nil {
		return errorf("pgstore: create api key %s: %w", k.ID, err)
	}
	return nil
}

// FindAPIKey implements apikey.Store.
func (s *Store) FindAPIKey(ctx context.Context, hash []byte) (apikey.Key, error) {
	k, err := scanAPIKey(s.pool.QueryRow(ctx, `SELECT id, name, hash, created_at FROM api_keys WHERE hash = $1`, hash))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return apikey.Key{}, errorf("pgstore: find api key: %w", apikey.ErrNotFound)
	case err != nil:
		return apikey.Key{}, errorf("pgstore: find api key: %w", err)
	}
	return k, nil
}

// ListAPIKeys implements apikey.Store, oldest first.
func (s *Store) ListAPIKeys(ctx context.Context) ([]apikey.Key, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, name, hash, created_at FROM api_keys ORDER BY created_at, id`)
	if err != nil {
		return nil, errorf("pgstore: list api keys: %w", err)
	}
	defer rows.Close()
	var out []apikey.Key
	for rows.Next() {
		k, err := scanAPIKey(rows)
		if err != nil {
			return nil, errorf("pgstore: list api keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("pgstore: list api keys: %w", err)
	}
	return out, nil
}

// DeleteAPIKey implements apikey.Store.
func (s *Store) DeleteAPIKey(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM api_keys WHERE id = $1`, id)
	if err != nil {
		return errorf("pgstore: delete api key %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return errorf("pgstore: delete api key %s: %w", id, apikey.ErrNotFound)
	}
	return nil
}

func scanAPIKey(r pgx.Row) (apikey.Key, error) {
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
