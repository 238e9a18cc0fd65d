package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/coapgate/coapgate/internal/secretbox"
)

// Associated data of sealed columns: the same strings as the embedded
// adapter's, so a value sealed by one adapter opens in the other.
func productSecretAAD(pk string) string { return "products.product_secret:" + pk }

func deviceSecretAAD(pk, dk string) string { return "devices.device_secret:" + pk + "/" + dk }

func ruleActionsAAD(id string) string { return "rules.actions:" + id }

type sealedColumn struct {
	table, column string
	key           string // SELECT expression of the row key (two text values)
	where         string // WHERE clause matching the row by key ($1, $2)
	aad           func(k1, k2 string) string
}

var sealedColumns = []sealedColumn{
	{"products", "product_secret", "product_key, ''", "product_key = $1 AND $2::text = ''",
		func(k1, _ string) string { return productSecretAAD(k1) }},
	{"devices", "device_secret", "product_key, device_key", "product_key = $1 AND device_key = $2",
		deviceSecretAAD},
	{"rules", "actions", "id, ''", "id = $1 AND $2::text = ''",
		func(k1, _ string) string { return ruleActionsAAD(k1) }},
}

// ErrWrongKey means the database holds secrets the key file cannot open.
var ErrWrongKey = errors.New("pgstore: the secret key file does not match this database (secrets cannot be decrypted)")

// checkKeys opens one sealed value of each column, so a wrong key file
// fails Open clearly.
func (s *Store) checkKeys(ctx context.Context) error {
	for _, c := range sealedColumns {
		var k1, k2, v string
		err := s.pool.QueryRow(ctx, `SELECT `+c.key+`, `+c.column+` FROM `+c.table+` LIMIT 1`).Scan(&k1, &k2, &v)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return errorf("pgstore: check keys: %w", err)
		}
		if _, err := s.box.Open(v, c.aad(k1, k2)); err != nil {
			return fmt.Errorf("%w: %s.%s: %w", ErrWrongKey, c.table, c.column, err)
		}
	}
	return nil
}

// Reseal rewrites every sealed value not sealed with the active key, in one
// transaction, and returns how many it rewrote. Every node must already
// have the new key file (nodes that do not cannot open the new values).
func (s *Store) Reseal(ctx context.Context) (n int, err error) {
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		for _, c := range sealedColumns {
			rows, err := tx.Query(ctx, `SELECT `+c.key+`, `+c.column+` FROM `+c.table+` FOR UPDATE`)
			if err != nil {
				return err
			}
			type row struct{ k1, k2, v string }
			var todo []row
			for rows.Next() {
				var r row
				if err := rows.Scan(&r.k1, &r.k2, &r.v); err != nil {
					rows.Close()
					return err
				}
				if s.box.NeedsReseal(r.v) {
					todo = append(todo, r)
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			for _, r := range todo {
				aad := c.aad(r.k1, r.k2)
				plain := r.v
				if secretbox.IsSealed(r.v) {
					if plain, err = s.box.OpenString(r.v, aad); err != nil {
						return fmt.Errorf("%s.%s: %w", c.table, c.column, err)
					}
				}
				if _, err := tx.Exec(ctx, `UPDATE `+c.table+` SET `+c.column+` = $3 WHERE `+c.where,
					r.k1, r.k2, s.box.SealString(plain, aad)); err != nil {
					return err
				}
			}
			n += len(todo)
		}
		return nil
	})
	if err != nil {
		return 0, errorf("pgstore: reseal: %w", err)
	}
	return n, nil
}

func (s *Store) openSecret(sealed, aad string) (string, error) {
	v, err := s.box.OpenString(sealed, aad)
	if err != nil {
		return "", errorf("pgstore: %w", err)
	}
	return v, nil
}
