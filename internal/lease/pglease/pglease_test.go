package pglease

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coapgate/coapgate/internal/pgstore/pgtest"
)

func newElector(t *testing.T, url, node string) *Elector {
	t.Helper()
	e, err := New(Options{URL: url, Node: node, Retry: 20 * time.Millisecond, Check: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Monitor(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

// running starts e.Run(name) and returns a channel that receives each
// lease context fn gets.
func running(t *testing.T, e *Elector, name string) (chan context.Context, context.CancelFunc) {
	t.Helper()
	got := make(chan context.Context, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Run(ctx, name, func(lctx context.Context) {
			got <- lctx
			<-lctx.Done()
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return got, cancel
}

func wait(t *testing.T, ch chan context.Context) context.Context {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(30 * time.Second): // a hang guard, not a timing assert
		t.Fatal("lease never acquired")
		return nil
	}
}

func TestSingleHolderAndTakeover(t *testing.T) {
	url := pgtest.Schema(t)
	a, b := newElector(t, url, "a"), newElector(t, url, "b")
	gotA, _ := running(t, a, "points")
	lA := wait(t, gotA)

	// While a holds it, b cannot take it.
	if _, h, err := b.try(context.Background(), "points"); err != nil || h != nil {
		t.Fatalf("b took a held lease: holding=%v err=%v", h, err)
	}
	// Another name is independent.
	if _, h, err := b.try(context.Background(), "other"); err != nil || h == nil {
		t.Fatalf("b did not get a free lease: %v", err)
	} else {
		b.release("other", h)
	}
	gotB, _ := running(t, b, "points")

	// a's database session dies (as when its process is killed): a's work
	// is cancelled and b takes over.
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var n int
	if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'coapgate-lease a'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminate a's session: n=%d err=%v", n, err)
	}
	<-lA.Done()
	lB := wait(t, gotB)
	if !b.Holds("points") {
		t.Fatal("b does not report the lease it runs under")
	}
	select {
	case <-gotA:
		t.Fatal("a re-acquired the lease b holds")
	default:
	}
	if _, h, err := a.try(ctx, "points"); err != nil || h != nil {
		t.Fatalf("a (reconnected) took b's lease: holding=%v err=%v", h, err)
	}
	_ = lB
}

func TestReleasedOnStop(t *testing.T) {
	url := pgtest.Schema(t)
	a, b := newElector(t, url, "a"), newElector(t, url, "b")
	gotA, stopA := running(t, a, "forward:r1:0")
	lA := wait(t, gotA)
	gotB, _ := running(t, b, "forward:r1:0")
	stopA()
	<-lA.Done()
	wait(t, gotB)
	if a.Holds("forward:r1:0") {
		t.Fatal("a still holds a lease it gave back")
	}
}
