// Package natskv keeps replicated DTLS sessions (native.SessionStore) in a
// NATS JetStream key-value bucket: compare-and-set by revision gives one
// owner at a time, the bucket's TTL bounds what dead nodes leave behind,
// and a watch tells every node at once when a session moves.
package natskv

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/coapgate/coapgate/internal/dtlsx/native"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Store is a native.SessionStore on a JetStream bucket.
type Store struct {
	kv jetstream.KeyValue
}

var _ native.SessionStore = (*Store)(nil)

// Open creates (or updates) the bucket on nc: one value per key, file
// storage, every key expiring ttl after its last write.
func Open(ctx context.Context, nc *nats.Conn, bucket string, ttl time.Duration) (*Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("natskv: %w", err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: bucket, Description: "coapgate DTLS sessions (sealed)", History: 1, TTL: ttl,
		Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("natskv: bucket %s: %w", bucket, err)
	}
	return &Store{kv: kv}, nil
}

func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return fmt.Errorf("%w: %w", native.ErrNotFound, err)
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists):
		return fmt.Errorf("%w: %w", native.ErrConflict, err)
	}
	return fmt.Errorf("natskv: %w", err)
}

// Get implements native.SessionStore.
func (s *Store) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if err != nil {
		return nil, 0, mapErr(err)
	}
	return e.Value(), e.Revision(), nil
}

// Put implements native.SessionStore.
func (s *Store) Put(ctx context.Context, key string, val []byte) (uint64, error) {
	rev, err := s.kv.Put(ctx, key, val)
	return rev, mapErr(err)
}

// Update implements native.SessionStore. A key deleted since rev is a
// conflict as well (someone ended the session).
func (s *Store) Update(ctx context.Context, key string, val []byte, rev uint64) (uint64, error) {
	n, err := s.kv.Update(ctx, key, val, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// Expired, deleted or rewritten: tell expiry (gone) apart.
		if _, gerr := s.kv.Get(ctx, key); errors.Is(gerr, jetstream.ErrKeyNotFound) {
			return 0, fmt.Errorf("%w: %w", native.ErrNotFound, err)
		}
	}
	return n, mapErr(err)
}

// Delete implements native.SessionStore.
func (s *Store) Delete(ctx context.Context, key string, rev uint64) error {
	return mapErr(s.kv.Delete(ctx, key, jetstream.LastRevision(rev)))
}

// Watch implements native.SessionStore.
func (s *Store) Watch(ctx context.Context, fn func(key string, val []byte, rev uint64)) error {
	w, err := s.kv.WatchAll(ctx, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		return mapErr(err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("natskv: watch closed")
			}
			if e == nil {
				continue
			}
			var val []byte
			if e.Operation() == jetstream.KeyValuePut {
				val = e.Value()
			}
			fn(e.Key(), val, e.Revision())
		}
	}
}
