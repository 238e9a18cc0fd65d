package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"

	"github.com/coapgate/coapgate/internal/registry"
)

// changeFeed is registry.ChangeFeed across every node sharing the
// database: Publish runs this node's subscribers at once and NOTIFYs the
// others, whose listeners run theirs.
type changeFeed struct {
	s     *Store
	node  string // this Store's id, to skip its own notifications
	local registry.LocalChanges
}

var _ registry.ChangeFeed = (*changeFeed)(nil)

func newChangeFeed(s *Store) *changeFeed {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &changeFeed{s: s, node: hex.EncodeToString(b[:])}
}

// DeviceChanges returns the store's device change feed (registry.ChangeFeed)
// shared by every node on this database; a change reaches the other nodes'
// subscribers within their listener's round trip.
func (s *Store) DeviceChanges() registry.ChangeFeed { return s.changes }

// Publish implements registry.ChangeFeed.
func (f *changeFeed) Publish(ctx context.Context, c registry.DeviceChange) error {
	_ = f.local.Publish(ctx, c) // never fails
	if _, err := f.s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, f.s.devChannel,
		f.node+"\x1f"+c.ProductKey+"\x1f"+c.DeviceKey); err != nil {
		return errorf("pgstore: publish device change: %w", err)
	}
	return nil
}

// Subscribe implements registry.ChangeFeed.
func (f *changeFeed) Subscribe(fn func(registry.DeviceChange)) (cancel func()) {
	return f.local.Subscribe(fn)
}

// received handles a notification from the device channel.
func (f *changeFeed) received(payload string) {
	parts := strings.Split(payload, "\x1f")
	if len(parts) != 3 || parts[0] == f.node {
		return
	}
	_ = f.local.Publish(context.Background(), registry.DeviceChange{ProductKey: parts[1], DeviceKey: parts[2]})
}
