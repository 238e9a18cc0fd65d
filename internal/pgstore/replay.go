package pgstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/replay"
)

var _ replay.Store = (*Store)(nil)

// upsertReplaySQL writes a session's state unless the stored one is newer
// (a higher version): states committed out of order never move it back.
const upsertReplaySQL = `INSERT INTO replay_sessions AS r (product_key, device_key, random, floor, size,
	high, started, seen, version, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
	ON CONFLICT (product_key, device_key, random) DO UPDATE SET floor = excluded.floor,
	size = excluded.size, high = excluded.high, started = excluded.started, seen = excluded.seen,
	version = excluded.version, expires_at = excluded.expires_at
	WHERE excluded.version > r.version
	OR (excluded.version = r.version AND excluded.expires_at > r.expires_at)`

// AppendWithState implements ingest.StateAppender: msgs appended and
// states saved in one transaction, so a session's state is durable exactly
// when the uplink it accepted is. Version and the other uint64 fields are
// stored as their int64 bit patterns; the version comparison is only
// between states of one session, written by this code, which keeps
// versions below 2^63.
func (s *Store) AppendWithState(ctx context.Context, msgs []*message.Message, states []replay.State) error {
	if len(states) == 0 {
		return s.Append(ctx, msgs)
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if len(msgs) > 0 {
			if err := lockLogTx(ctx, tx); err != nil {
				return err
			}
			if err := s.appendLogTx(ctx, tx, msgs...); err != nil {
				return err
			}
		}
		var b pgx.Batch
		for _, st := range states {
			b.Queue(upsertReplaySQL, st.Key.ProductKey, st.Key.DeviceKey, st.Key.Random[:],
				int64(st.Floor), int64(st.Size), int64(st.High), st.Started, encodeSeen(st.Seen),
				int64(st.Version), toNanos(st.Expires))
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		for _, m := range msgs {
			m.ID = 0
		}
		return errorf("pgstore: append %d messages, %d replay states: %w", len(msgs), len(states), err)
	}
	return nil
}

// LoadReplayState implements replay.Store.
func (s *Store) LoadReplayState(ctx context.Context, k replay.Key) (replay.State, bool, error) {
	var (
		floor, size, high, version, expires int64
		started                             bool
		seen                                []byte
	)
	err := s.pool.QueryRow(ctx, `SELECT floor, size, high, started, seen, version, expires_at
		FROM replay_sessions WHERE product_key = $1 AND device_key = $2 AND random = $3`,
		k.ProductKey, k.DeviceKey, k.Random[:]).Scan(&floor, &size, &high, &started, &seen, &version, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return replay.State{}, false, nil
	}
	if err != nil {
		return replay.State{}, false, errorf("pgstore: load replay state %s/%s: %w", k.ProductKey, k.DeviceKey, err)
	}
	return replay.State{
		Key: k, Floor: uint64(floor), Size: int(size), High: uint64(high), Started: started,
		Seen: decodeSeen(seen), Version: uint64(version), Expires: fromNanos(expires),
	}, true, nil
}

// PruneReplayStates deletes the states of sessions that expired before
// before and returns how many.
func (s *Store) PruneReplayStates(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM replay_sessions WHERE expires_at < $1`, before.UnixNano())
	if err != nil {
		return 0, errorf("pgstore: prune replay states: %w", err)
	}
	return tag.RowsAffected(), nil
}

func encodeSeen(words []uint64) []byte {
	b := make([]byte, 0, 8*len(words))
	for _, w := range words {
		b = binary.LittleEndian.AppendUint64(b, w)
	}
	return b
}

func decodeSeen(b []byte) []uint64 {
	out := make([]uint64, len(b)/8)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return out
}

// lockClassReplay is the first key of the two-key advisory locks that
// serialise admissions to one session's window (the second is a hash of
// the session key). The two-key space is apart from the 64-bit one of the
// log, migration and lease locks; two sessions sharing a hash only wait
// for each other.
const lockClassReplay = 0x72706c79 // "rply"

func replayLockKey(k replay.Key) int32 {
	h := fnv.New32a()
	h.Write([]byte(k.ProductKey))
	h.Write([]byte{0})
	h.Write([]byte(k.DeviceKey))
	h.Write(k.Random[:])
	return int32(h.Sum32())
}

// AppendClaims implements ingest.ClaimAppender: in one transaction, each
// session of the batch is locked (an advisory lock on its key, held to
// commit, taken in a fixed order so two nodes' batches never deadlock),
// its stored window read, and every entry's accepted number admitted
// against it in order (replay.Admit). A number another node (or an earlier
// entry) already used refuses its entry: its message is not appended. A
// refused entry whose message repeats a stored CON exchange (the device
// retransmitting an uplink whose answer was lost with the node that stored
// it) is not a replay: it is answered with the stored entry's ID. The
// admitted windows are written back, and the remaining messages appended.
func (s *Store) AppendClaims(ctx context.Context, msgs []*message.Message, states []replay.State) ([]error, error) {
	if len(msgs) != len(states) {
		return nil, fmt.Errorf("pgstore: append claims: %d messages, %d states", len(msgs), len(states))
	}
	refused := make([]error, len(msgs))
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		clear(refused)
		var (
			pks, dks []string
			rnds     [][]byte
			locks    []int32
			anyMsg   bool
		)
		seen := map[replay.Key]bool{}
		for i, st := range states {
			anyMsg = anyMsg || msgs[i] != nil
			if st.Key == (replay.Key{}) || seen[st.Key] {
				continue
			}
			seen[st.Key] = true
			pks, dks, rnds = append(pks, st.Key.ProductKey), append(dks, st.Key.DeviceKey), append(rnds, append([]byte(nil), st.Key.Random[:]...))
			locks = append(locks, replayLockKey(st.Key))
		}
		// One round trip: the log lock first (as every appender takes it),
		// then the session locks in key order (so there is no cycle), then
		// the stored windows.
		slices.Sort(locks)
		locks = slices.Compact(locks)
		var lb pgx.Batch
		if anyMsg {
			lb.Queue(`SELECT pg_advisory_xact_lock(` + lockLogKey + `)`)
		}
		if len(locks) > 0 {
			// The keys sorted in the subquery: PostgreSQL evaluates the
			// volatile lock calls row by row in that order.
			lb.Queue(`SELECT count(pg_advisory_xact_lock($1::int4, k))
				FROM (SELECT k FROM unnest($2::int4[]) AS k ORDER BY k) AS sorted`, int32(lockClassReplay), locks)
		}
		cur := map[replay.Key]replay.State{}
		if len(pks) > 0 {
			lb.Queue(loadReplayStatesSQL, pks, dks, rnds).Query(func(rows pgx.Rows) error {
				var err error
				cur, err = scanReplayStates(rows)
				return err
			})
		}
		if err := tx.SendBatch(ctx, &lb).Close(); err != nil {
			return fmt.Errorf("lock and load replay sessions: %w", err)
		}
		changed := map[replay.Key]bool{}
		var retried []string // exchanges of refused entries
		for i, st := range states {
			if st.Key == (replay.Key{}) {
				continue
			}
			c, ok := cur[st.Key]
			next, err := replay.Admit(c, ok, st)
			if err != nil {
				refused[i] = err
				if m := msgs[i]; m != nil && m.Exchange != "" {
					retried = append(retried, m.Exchange)
				}
				continue
			}
			cur[st.Key], changed[st.Key] = next, true
		}
		if len(retried) > 0 {
			stored := map[string]bool{}
			rows, err := tx.Query(ctx, `SELECT key FROM exchanges WHERE key = ANY($1) AND expires_at > $2`, retried, time.Now().UnixNano())
			if err != nil {
				return fmt.Errorf("look up exchanges: %w", err)
			}
			for rows.Next() {
				var k string
				if err := rows.Scan(&k); err != nil {
					rows.Close()
					return fmt.Errorf("look up exchanges: %w", err)
				}
				stored[k] = true
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("look up exchanges: %w", err)
			}
			for i, r := range refused {
				if r != nil && msgs[i] != nil && stored[msgs[i].Exchange] {
					refused[i] = nil // appendLogTx answers it with the stored ID
				}
			}
		}
		var app []*message.Message
		for i, m := range msgs {
			if m != nil && refused[i] == nil {
				app = append(app, m)
			}
		}
		if len(app) > 0 {
			if err := s.appendLogTx(ctx, tx, app...); err != nil {
				return err
			}
		}
		var b pgx.Batch
		for k := range changed {
			st := cur[k]
			b.Queue(`INSERT INTO replay_sessions AS r (product_key, device_key, random, floor, size,
				high, started, seen, version, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
				ON CONFLICT (product_key, device_key, random) DO UPDATE SET floor = excluded.floor,
				size = excluded.size, high = excluded.high, started = excluded.started, seen = excluded.seen,
				version = excluded.version, expires_at = excluded.expires_at`,
				k.ProductKey, k.DeviceKey, k.Random[:], int64(st.Floor), int64(st.Size), int64(st.High),
				st.Started, encodeSeen(st.Seen), int64(st.Version), toNanos(st.Expires))
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		for _, m := range msgs {
			if m != nil {
				m.ID = 0
			}
		}
		return nil, errorf("pgstore: append %d entries with replay admission: %w", len(msgs), err)
	}
	return refused, nil
}

// loadReplayStatesSQL reads the stored states of the sessions given as
// three arrays (product keys, device keys, randoms).
const loadReplayStatesSQL = `SELECT r.product_key, r.device_key, r.random, r.floor, r.size, r.high,
	r.started, r.seen, r.version, r.expires_at
	FROM replay_sessions r JOIN unnest($1::text[], $2::text[], $3::bytea[]) AS k(pk, dk, rnd)
	ON r.product_key = k.pk AND r.device_key = k.dk AND r.random = k.rnd`

func scanReplayStates(rows pgx.Rows) (map[replay.Key]replay.State, error) {
	out := map[replay.Key]replay.State{}
	for rows.Next() {
		var (
			k                                   replay.Key
			rnd, seen                           []byte
			floor, size, high, version, expires int64
			started                             bool
		)
		if err := rows.Scan(&k.ProductKey, &k.DeviceKey, &rnd, &floor, &size, &high, &started, &seen, &version, &expires); err != nil {
			return nil, fmt.Errorf("load replay states: %w", err)
		}
		copy(k.Random[:], rnd)
		out[k] = replay.State{Key: k, Floor: uint64(floor), Size: int(size), High: uint64(high), Started: started,
			Seen: decodeSeen(seen), Version: uint64(version), Expires: fromNanos(expires)}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load replay states: %w", err)
	}
	return out, nil
}
