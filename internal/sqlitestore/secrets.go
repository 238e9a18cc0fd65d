package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/coapgate/coapgate/internal/secretbox"
)

// Secrets at rest: product secrets, device secrets and the actions of
// forwarding rules (webhook secrets, broker and database credentials) are
// stored sealed by internal/secretbox. The associated data names the column
// and the row, so a sealed value moved to another row does not open.

func productSecretAAD(pk string) string { return "products.product_secret:" + pk }

func deviceSecretAAD(pk, dk string) string { return "devices.device_secret:" + pk + "/" + dk }

func ruleActionsAAD(id string) string { return "rules.actions:" + id }

// sealedColumn describes one sealed column for the migration, the key check
// and Reseal.
type sealedColumn struct {
	table, column string
	key           string // SELECT expression of the row key
	where         string // WHERE clause matching the row by key (?1, ?2)
	aad           func(keys []string) string
}

var sealedColumns = []sealedColumn{
	{"products", "product_secret", "product_key, ''", "product_key = ?1",
		func(k []string) string { return productSecretAAD(k[0]) }},
	{"devices", "device_secret", "product_key, device_key", "product_key = ?1 AND device_key = ?2",
		func(k []string) string { return deviceSecretAAD(k[0], k[1]) }},
	{"rules", "actions", "id, ''", "id = ?1",
		func(k []string) string { return ruleActionsAAD(k[0]) }},
}

// sealedRow is one value read for (re)sealing.
type sealedRow struct {
	k1, k2, value string
}

// resealColumn rewrites every value of c that need() selects, sealed with
// the active key; plaintext values (need sees them as not sealed) are
// sealed as they are. It returns the number of rows rewritten.
func (s *Store) resealColumn(ctx context.Context, tx *sql.Tx, c sealedColumn, need func(string) bool) (int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT `+c.key+`, `+c.column+` FROM `+c.table)
	if err != nil {
		return 0, fmt.Errorf("read %s.%s: %w", c.table, c.column, err)
	}
	var todo []sealedRow
	for rows.Next() {
		var r sealedRow
		if err := rows.Scan(&r.k1, &r.k2, &r.value); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read %s.%s: %w", c.table, c.column, err)
		}
		if need(r.value) {
			todo = append(todo, r)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read %s.%s: %w", c.table, c.column, err)
	}
	for _, r := range todo {
		aad := c.aad([]string{r.k1, r.k2})
		plain := r.value
		if secretbox.IsSealed(r.value) {
			if plain, err = s.box.OpenString(r.value, aad); err != nil {
				return 0, fmt.Errorf("%s.%s: %w", c.table, c.column, err)
			}
		}
		args := []any{r.k1}
		if r.k2 != "" {
			args = append(args, r.k2)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+c.table+` SET `+c.column+` = ?`+fmt.Sprint(len(args)+1)+
			` WHERE `+c.where, append(args, s.box.SealString(plain, aad))...); err != nil {
			return 0, fmt.Errorf("write %s.%s: %w", c.table, c.column, err)
		}
	}
	return len(todo), nil
}

// sealPlaintextSecrets is the Go part of migration 0008: it seals every
// secret stored in plaintext by earlier versions.
func sealPlaintextSecrets(ctx context.Context, tx *sql.Tx, s *Store) error {
	for _, c := range sealedColumns {
		if _, err := s.resealColumn(ctx, tx, c, func(v string) bool { return !secretbox.IsSealed(v) }); err != nil {
			return err
		}
	}
	return nil
}

// Reseal rewrites every sealed value that is not sealed with the active key
// (after a key was added to the key file), in one transaction, and returns
// how many values it rewrote. Run it while no other process writes the
// database with the old key file.
func (s *Store) Reseal(ctx context.Context) (n int, err error) {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("sqlitestore: reseal: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	for _, c := range sealedColumns {
		k, err := s.resealColumn(ctx, tx, c, s.box.NeedsReseal)
		if err != nil {
			return 0, fmt.Errorf("sqlitestore: reseal: %w", err)
		}
		n += k
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("sqlitestore: reseal: commit: %w", err)
	}
	return n, nil
}

// ErrWrongKey means the database holds secrets the key file cannot open.
var ErrWrongKey = errors.New("sqlitestore: the secret key file does not match this database (secrets cannot be decrypted)")

// checkKeys opens one sealed value of each column, so that a wrong or
// missing key file fails Open with a clear error rather than every
// authentication later.
func (s *Store) checkKeys(ctx context.Context) error {
	for _, c := range sealedColumns {
		var r sealedRow
		err := s.writer.QueryRowContext(ctx, `SELECT `+c.key+`, `+c.column+` FROM `+c.table+` LIMIT 1`).Scan(&r.k1, &r.k2, &r.value)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return fmt.Errorf("sqlitestore: check keys: %w", err)
		}
		if _, err := s.box.Open(r.value, c.aad([]string{r.k1, r.k2})); err != nil {
			return fmt.Errorf("%w: %s.%s: %w", ErrWrongKey, c.table, c.column, err)
		}
	}
	return nil
}

// openSecret opens a sealed column value.
func (s *Store) openSecret(sealed, aad string) (string, error) {
	v, err := s.box.OpenString(sealed, aad)
	if err != nil {
		return "", fmt.Errorf("sqlitestore: %w", err)
	}
	return v, nil
}
