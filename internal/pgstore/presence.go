package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coapgate/coapgate/internal/event"
	"github.com/coapgate/coapgate/internal/presence"
)

// RecordPresence merges the contacts one node saw into the shared presence
// (presence.Record.Apply) and records the transitions they make, in one
// transaction: the log lock first (the events go to the log; it also keeps
// two nodes' merges and the sweep apart), then the devices' rows, created
// when missing and locked in key order.
func (s *Store) RecordPresence(ctx context.Context, contacts []presence.Contact) error {
	if len(contacts) == 0 {
		return nil
	}
	cs := slices.Clone(contacts)
	slices.SortStableFunc(cs, func(a, b presence.Contact) int {
		if c := strings.Compare(a.ProductKey, b.ProductKey); c != 0 {
			return c
		}
		return strings.Compare(a.DeviceKey, b.DeviceKey)
	})
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockLogTx(ctx, tx); err != nil {
			return err
		}
		pks, dks := make([]string, len(cs)), make([]string, len(cs))
		for i, c := range cs {
			pks[i], dks[i] = c.ProductKey, c.DeviceKey
		}
		rows, err := tx.Query(ctx, `SELECT p.product_key, p.device_key, p.last_seen, p.lifetime, p.address, p.transport, p.online
			FROM device_presence p JOIN unnest($1::text[], $2::text[]) AS k(pk, dk)
			ON p.product_key = k.pk AND p.device_key = k.dk
			ORDER BY p.product_key, p.device_key FOR UPDATE OF p`, pks, dks)
		if err != nil {
			return fmt.Errorf("lock presence: %w", err)
		}
		type dkey struct{ pk, dk string }
		cur := map[dkey]presence.Record{}
		for rows.Next() {
			var (
				k                  dkey
				seen, lifetime     int64
				r                  presence.Record
				address, transport string
			)
			if err := rows.Scan(&k.pk, &k.dk, &seen, &lifetime, &address, &transport, &r.Online); err != nil {
				rows.Close()
				return fmt.Errorf("lock presence: %w", err)
			}
			r.LastSeen, r.Lifetime, r.Address, r.Transport = fromNanos(seen), time.Duration(lifetime), address, transport
			cur[k] = r
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("lock presence: %w", err)
		}
		var evs []event.Event
		changed := map[dkey]bool{}
		for _, c := range cs {
			k := dkey{c.ProductKey, c.DeviceKey}
			next, e := cur[k].Apply(c)
			cur[k], changed[k] = next, true
			evs = append(evs, e...)
		}
		// A device new to the table has no row to lock: two nodes may both
		// create it; the insert that loses waits for the other's commit
		// and then updates (the log lock has serialised them already).
		var b pgx.Batch
		for k := range changed {
			r := cur[k]
			b.Queue(`INSERT INTO device_presence (product_key, device_key, last_seen, lifetime, address, transport, online)
				VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (product_key, device_key) DO UPDATE SET
				last_seen = excluded.last_seen, lifetime = excluded.lifetime, address = excluded.address,
				transport = excluded.transport, online = excluded.online`,
				k.pk, k.dk, toNanos(r.LastSeen), int64(r.Lifetime), r.Address, r.Transport, r.Online)
		}
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("write presence: %w", err)
		}
		if len(evs) == 0 {
			return nil
		}
		return s.appendEventsTx(ctx, tx, evs)
	})
	if err != nil {
		return errorf("pgstore: record presence of %d devices: %w", len(contacts), err)
	}
	return nil
}

// sweepBatch bounds the devices one SweepPresence transaction takes
// offline.
const sweepBatch = 1000

// SweepPresence records the offline transition of every device online in
// the shared presence whose lifetime passed before before (now minus a
// grace that lets the nodes flush their contacts first); At is the last
// contact plus the lifetime. It returns how many went offline. Run by one
// node of the cluster at a time (the "presence" lease).
func (s *Store) SweepPresence(ctx context.Context, before time.Time) (int, error) {
	total := 0
	for {
		n := 0
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			if err := lockLogTx(ctx, tx); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, `UPDATE device_presence SET online = false
				WHERE (product_key, device_key) IN (SELECT product_key, device_key FROM device_presence
					WHERE online AND last_seen + lifetime <= $1 LIMIT $2)
				RETURNING product_key, device_key, last_seen, lifetime, address, transport`, toNanos(before), sweepBatch)
			if err != nil {
				return fmt.Errorf("sweep presence: %w", err)
			}
			var evs []event.Event
			for rows.Next() {
				var (
					pk, dk         string
					seen, lifetime int64
					r              = presence.Record{Online: true}
				)
				if err := rows.Scan(&pk, &dk, &seen, &lifetime, &r.Address, &r.Transport); err != nil {
					rows.Close()
					return fmt.Errorf("sweep presence: %w", err)
				}
				r.LastSeen, r.Lifetime = fromNanos(seen), time.Duration(lifetime)
				if _, e, ok := r.Expire(pk, dk, before); ok {
					evs = append(evs, e)
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("sweep presence: %w", err)
			}
			n = len(evs)
			if n == 0 {
				return nil
			}
			return s.appendEventsTx(ctx, tx, evs)
		})
		if err != nil {
			return total, errorf("pgstore: sweep presence: %w", err)
		}
		total += n
		if n < sweepBatch {
			return total, nil
		}
	}
}

// LookupPresence returns a device's shared presence (ok false: never seen).
func (s *Store) LookupPresence(ctx context.Context, pk, dk string) (presence.Record, bool, error) {
	var (
		r              presence.Record
		seen, lifetime int64
	)
	err := s.pool.QueryRow(ctx, `SELECT last_seen, lifetime, address, transport, online FROM device_presence
		WHERE product_key = $1 AND device_key = $2`, pk, dk).Scan(&seen, &lifetime, &r.Address, &r.Transport, &r.Online)
	if errors.Is(err, pgx.ErrNoRows) {
		return presence.Record{}, false, nil
	}
	if err != nil {
		return presence.Record{}, false, errorf("pgstore: look up presence %s/%s: %w", pk, dk, err)
	}
	r.LastSeen, r.Lifetime = fromNanos(seen), time.Duration(lifetime)
	return r, true, nil
}

// CountPresence returns how many devices of the shared presence are
// online at now (seen within their lifetime, whether or not the sweep has
// run) and how many it holds in all. It reads the whole table: callers
// cache it (the console's overview counts at most once a minute).
func (s *Store) CountPresence(ctx context.Context, now time.Time) (online, seen int, err error) {
	err = s.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE online AND last_seen + lifetime > $1), count(*)
		FROM device_presence`, toNanos(now)).Scan(&online, &seen)
	if err != nil {
		return 0, 0, errorf("pgstore: count presence: %w", err)
	}
	return online, seen, nil
}
