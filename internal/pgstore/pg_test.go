package pgstore

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/coapgate/coapgate/internal/event/eventtest"
	"github.com/coapgate/coapgate/internal/forward"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/secretbox"
	"github.com/coapgate/coapgate/internal/storeerr"
)

func logMsg(dk, body string) *message.Message {
	return &message.Message{ProductKey: "pk", DeviceKey: dk, Topic: "/t", Payload: []byte(body),
		ContentFormat: 50, ReceivedAt: time.Unix(1, 0), Transport: message.TransportCoAP}
}

// waitLockWaiter waits until some backend of this database waits on an
// advisory lock (polling the server's own state, not the clock); it fails
// if done (the waiting operation) finishes first.
func waitLockWaiter(t *testing.T, s *Store, done <-chan error) {
	t.Helper()
	for {
		select {
		case err := <-done:
			t.Fatalf("second append finished (%v) while the first was uncommitted", err)
		default:
		}
		var n int
		if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks
			WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND ((classid::bigint << 32) | objid::bigint) = `+lockLogKey).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
	}
}

// TestLogCommitOrder: an append that starts while another transaction has
// drawn a log ID but not committed waits for it, so no reader ever sees a
// higher ID before a lower one becomes visible (a tailer that resumes from
// "id > last seen" would skip the lower one forever).
func TestLogCommitOrder(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	// Transaction A draws ID 1 and stays open.
	txA, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer txA.Rollback(ctx) //nolint:errcheck // no-op after Commit; frees the connection on failure
	a := logMsg("a", "first")
	if err := lockLogTx(ctx, txA); err != nil {
		t.Fatal(err)
	}
	if err := s.appendLogTx(ctx, txA, a); err != nil {
		t.Fatal(err)
	}
	// B appends concurrently.
	b := logMsg("b", "second")
	done := make(chan error, 1)
	go func() { done <- s.Append(ctx, []*message.Message{b}) }()
	waitLockWaiter(t, s, done)
	// While A is open, a reader sees nothing: B has not drawn an ID.
	if got, err := s.List(ctx, message.Query{}); err != nil || len(got) != 0 {
		t.Fatalf("while the first append is open the log shows %+v, %v; want nothing", got, err)
	}
	select {
	case err := <-done:
		t.Fatalf("second append finished (%v) while the first was uncommitted", err)
	default:
	}
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if b.ID <= a.ID {
		t.Fatalf("ids a=%d b=%d: the later commit has the lower id", a.ID, b.ID)
	}
}

// TestLogTailerMissesNothing: concurrent appenders and a tailer that reads
// "id > cursor" repeatedly; the tailer sees every entry exactly once.
func TestLogTailerMissesNothing(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	const writers, per = 4, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				if err := s.Append(ctx, []*message.Message{logMsg("w", strings.Repeat("x", w+i%3))}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	seen := map[int64]bool{}
	var cursor int64
	for finished := false; ; {
		select {
		case <-done:
			finished = true
		default:
		}
		got, err := s.List(ctx, message.Query{AfterID: cursor, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range got {
			if seen[m.ID] {
				t.Fatalf("id %d seen twice", m.ID)
			}
			seen[m.ID] = true
			cursor = m.ID
		}
		if finished && len(got) == 0 {
			break
		}
	}
	all, err := s.List(ctx, message.Query{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != writers*per || len(seen) != len(all) {
		t.Fatalf("tailer saw %d of %d entries", len(seen), len(all))
	}
}

// TestNotifyAcrossNodes: an append through one store wakes Changed on
// another store sharing the database (another gateway node).
func TestNotifyAcrossNodes(t *testing.T) {
	a, u := openTest(t)
	b, err := Open(context.Background(), Options{URL: u, Keys: testKeys})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	changed := b.Changed()
	if err := a.Append(context.Background(), []*message.Message{logMsg("d", "x")}); err != nil {
		t.Fatal(err)
	}
	eventtest.WaitChanged(t, changed, "an append on another node")
}

// TestSecretsSealed: no plain secret reaches a PostgreSQL row.
func TestSecretsSealed(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	const ps, ds, hs, mp = "PGPRODUCTSECRET01", "PGDEVICESECRET002", "PGHOOKSECRET00003", "PGMQTTPASS0000004"
	if err := s.CreateProduct(ctx, registry.Product{ProductKey: "p", ProductSecret: ps, DataFormat: registry.FormatJSON}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateDevice(ctx, registry.Device{ProductKey: "p", DeviceKey: "d", DeviceSecret: ds}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRule(ctx, forward.Rule{ID: "r", TopicFilter: "#", MaxAttempts: 1, Actions: []forward.Action{
		{Type: "webhook", URL: "http://127.0.0.1:1/", Secret: hs},
		{Type: "mqtt", URL: "tcp://u:" + mp + "@127.0.0.1:1883", Topic: "t", Password: mp},
	}}, 0); err != nil {
		t.Fatal(err)
	}
	rows, err := s.pool.Query(ctx, `SELECT product_secret FROM products UNION ALL SELECT device_secret FROM devices
		UNION ALL SELECT actions FROM rules`)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(vals) != 3 {
		t.Fatalf("rows %v, %v", vals, err)
	}
	for _, v := range vals {
		for _, sec := range []string{ps, ds, hs, mp} {
			if strings.Contains(v, sec) {
				t.Fatalf("stored value %q holds the plain secret %q", v, sec)
			}
		}
		if !secretbox.IsSealed(v) {
			t.Fatalf("stored value %q is not sealed", v)
		}
	}
	d, err := s.GetDevice(ctx, "p", "d")
	if err != nil || d.DeviceSecret.Reveal() != ds {
		t.Fatalf("device secret read back %v, %v", d.DeviceSecret.Reveal(), err)
	}

	// Another key: Open refuses clearly. Rotation: both keys open, Reseal
	// moves everything to the new key, and then the new key alone opens.
	other, _ := secretbox.New(secretbox.GenerateKey())
	u := s.pool.Config().ConnString()
	if _, err := Open(ctx, Options{URL: u, Keys: other}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("Open with another key = %v, want ErrWrongKey", err)
	}
	newRaw := secretbox.GenerateKey()
	both, err := secretbox.Parse([]byte(secretbox.Line(testKeyRaw) + secretbox.Line(newRaw)))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, Options{URL: u, Keys: both})
	if err != nil {
		t.Fatal(err)
	}
	n, err := s2.Reseal(ctx)
	s2.Close()
	if err != nil || n != 3 {
		t.Fatalf("Reseal = %d, %v; want 3", n, err)
	}
	only, _ := secretbox.New(newRaw)
	s3, err := Open(ctx, Options{URL: u, Keys: only})
	if err != nil {
		t.Fatalf("Open with only the new key after Reseal: %v", err)
	}
	defer s3.Close()
	if r, err := s3.GetRule(ctx, "r"); err != nil || r.Actions[0].Secret != hs || r.Actions[1].Password != mp {
		t.Fatalf("rule after rotation %+v, %v", r.Actions, err)
	}
}

// TestConcurrentOpen: nodes starting together migrate once.
func TestConcurrentOpen(t *testing.T) {
	_, u := openTest(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(context.Background(), Options{URL: u, Keys: testKeys})
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		}()
	}
	wg.Wait()
	s, _ := Open(context.Background(), Options{URL: u, Keys: testKeys})
	defer s.Close()
	var n int
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	steps, _ := loadMigrations()
	if n != len(steps) {
		t.Fatalf("%d migration rows, want %d", n, len(steps))
	}
}

func TestSchemaTooNew(t *testing.T) {
	s, u := openTest(t)
	if _, err := s.pool.Exec(context.Background(), `INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')`); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), Options{URL: u, Keys: testKeys}); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open = %v, want ErrSchemaTooNew", err)
	}
}

// TestUnreachableIsUnavailable: a server that cannot be reached gives
// errors marked storeerr.ErrUnavailable; a refused statement does not.
func TestUnreachableIsUnavailable(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	if err := s.CreateProduct(ctx, registry.Product{ProductKey: "p", DataFormat: registry.FormatJSON}); err != nil {
		t.Fatal(err)
	}
	err := s.CreateProduct(ctx, registry.Product{ProductKey: "p", DataFormat: registry.FormatJSON})
	if !errors.Is(err, registry.ErrConflict) || errors.Is(err, storeerr.ErrUnavailable) {
		t.Fatalf("duplicate = %v, want ErrConflict only", err)
	}
	// A pool towards a port where nothing listens (pgxpool connects lazily).
	cfg := s.pool.Config()
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = "127.0.0.1", 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s = &Store{pool: pool, box: testKeys, channel: s.channel}
	if _, err := s.GetProduct(ctx, "p"); !errors.Is(err, storeerr.ErrUnavailable) {
		t.Fatalf("GetProduct with the server unreachable = %v, want ErrUnavailable", err)
	}
	if err := s.Append(ctx, []*message.Message{logMsg("d", "x")}); !errors.Is(err, storeerr.ErrUnavailable) {
		t.Fatalf("Append with the server unreachable = %v, want ErrUnavailable", err)
	}
}
