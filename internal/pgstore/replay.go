package pgstore

import (
	"context"
	"encoding/binary"
	"errors"
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
