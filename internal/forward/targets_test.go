package forward_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/coapgate/coapgate/internal/forward"
)

// proxy is a TCP relay to a real service that a test can take down and
// bring back, to play "target down then up". Its listener stays open the
// whole test (no other process can take the port meanwhile); while down it
// closes every connection at once and counts them as refused, so a test
// can wait until the target was really tried while down.
type proxy struct {
	t      testing.TB
	target string
	addr   string
	ln     net.Listener

	mu      sync.Mutex
	isDown  bool
	refused int
	conns   []net.Conn
}

func newProxy(t testing.TB, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, target: target, addr: ln.Addr().String(), ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.isDown {
				p.refused++
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.mu.Unlock()
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.down() })
	return p
}

// up relays connections again.
func (p *proxy) up() {
	p.mu.Lock()
	p.isDown = false
	p.mu.Unlock()
}

// down ends every relayed connection and refuses new ones.
func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isDown, p.refused = true, 0
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// refusedSinceDown is the number of connections refused since down.
func (p *proxy) refusedSinceDown() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}

func hostPort(t testing.TB, rawURL string) string {
	i := strings.Index(rawURL, "://")
	rest := rawURL[i+3:]
	if j := strings.IndexAny(rest, "/?"); j >= 0 {
		rest = rest[:j]
	}
	if k := strings.LastIndex(rest, "@"); k >= 0 {
		rest = rest[k+1:]
	}
	return rest
}

func TestMQTTTarget(t *testing.T) {
	brokerURL := env(t, "COAPGATE_TEST_MQTT_URL")
	st := openStore(t, t.TempDir())
	defer st.Close()
	m := startManager(t, st)
	defer closeManager(t, m)
	px := newProxy(t, hostPort(t, brokerURL))

	prefix := fmt.Sprintf("coapgate-test/%d", time.Now().UnixNano())
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID("sub-" + prefix[14:]))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	var mu sync.Mutex
	got := map[int64]string{} // log id -> topic
	if tok := sub.Subscribe(prefix+"/#", 1, func(_ mqtt.Client, msg mqtt.Message) {
		var e forward.Envelope
		if json.Unmarshal(msg.Payload(), &e) == nil {
			mu.Lock()
			got[e.ID] = msg.Topic()
			mu.Unlock()
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	r := forward.Rule{Name: "mqtt", Enabled: true, TopicFilter: "#", MaxAttempts: 100,
		Actions: []forward.Action{{Type: forward.ActionMQTT, URL: "tcp://" + px.addr,
			Topic: prefix + "/{productKey}/{deviceKey}/{topic}", Timeout: forward.Duration(2 * time.Second)}}}
	if _, err := m.CreateRule(context.Background(), r, forward.StartAtEnd); err != nil {
		t.Fatal(err)
	}
	has := func(ids []int64) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if _, ok := got[id]; !ok {
				return false
			}
		}
		return true
	}
	ids := appendN(t, st, "pk1", "dk1", 5)
	eventually(t, "mqtt deliveries", func() bool { return has(ids) })
	mu.Lock()
	if want := prefix + "/pk1/dk1/sys/pk1/dk1/thing/event/property/post"; got[ids[0]] != want {
		t.Fatalf("topic %q, want %q", got[ids[0]], want)
	}
	mu.Unlock()

	// Broker unreachable, then back: retried and delivered.
	px.down()
	more := appendN(t, st, "pk1", "dk1", 5)
	eventually(t, "a delivery attempt while the broker is down", func() bool { return px.refusedSinceDown() > 0 })
	px.up()
	eventually(t, "mqtt deliveries after the broker came back", func() bool { return has(more) })
}

func TestNATSTarget(t *testing.T) {
	natsURL := env(t, "COAPGATE_TEST_NATS_URL")
	ctx := context.Background()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	prefix := fmt.Sprintf("coapgate_test_%d", time.Now().UnixNano())

	// Core: a subscriber checks the subject template.
	sub, err := nc.SubscribeSync(prefix + ".core.>")
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	// JetStream: a stream of its own, deleted at the end.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: prefix, Subjects: []string{prefix + ".js.>"}})
	if err != nil {
		t.Fatal(err)
	}
	defer js.DeleteStream(ctx, prefix)

	st := openStore(t, t.TempDir())
	defer st.Close()
	m := startManager(t, st)
	defer closeManager(t, m)
	px := newProxy(t, hostPort(t, natsURL))
	r := forward.Rule{Name: "nats", Enabled: true, TopicFilter: "#", MaxAttempts: 100,
		Actions: []forward.Action{
			{Type: forward.ActionNATS, URL: natsURL, Subject: prefix + ".core.{productKey}.{topic}"},
			{Type: forward.ActionNATS, URL: "nats://" + px.addr, Subject: prefix + ".js.{deviceKey}", JetStream: true, Timeout: forward.Duration(2 * time.Second)},
		}}
	if _, err := m.CreateRule(ctx, r, forward.StartAtEnd); err != nil {
		t.Fatal(err)
	}
	ids := appendN(t, st, "pk1", "dk1", 3)
	for _, id := range ids {
		msg, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("core message for log id %d: %v", id, err)
		}
		var e forward.Envelope
		if err := json.Unmarshal(msg.Data, &e); err != nil || e.ID != id {
			t.Fatalf("core message %s: %v", msg.Data, err)
		}
		if want := prefix + ".core.pk1.sys.pk1.dk1.thing.event.property.post"; msg.Subject != want {
			t.Fatalf("subject %q, want %q", msg.Subject, want)
		}
	}
	eventually(t, "jetstream messages", func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Msgs == 3
	})
	// NATS unreachable for the JetStream action, then back.
	px.down()
	appendN(t, st, "pk1", "dk1", 2)
	eventually(t, "a delivery attempt while NATS is down", func() bool { return px.refusedSinceDown() > 0 })
	px.up()
	eventually(t, "jetstream messages after NATS came back", func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Msgs == 5
	})
}

func TestPostgresTarget(t *testing.T) {
	pgURL := env(t, "COAPGATE_TEST_POSTGRES_URL")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	table := fmt.Sprintf("coapgate_fwd_%d", time.Now().UnixNano())
	defer conn.Exec(ctx, "DROP TABLE IF EXISTS "+table)

	st := openStore(t, t.TempDir())
	defer st.Close()
	m := startManager(t, st)
	defer closeManager(t, m)
	px := newProxy(t, hostPort(t, pgURL))
	proxied := strings.Replace(pgURL, hostPort(t, pgURL), px.addr, 1)
	px.down() // the database is unreachable when the rule starts
	r := forward.Rule{Name: "pg", Enabled: true, TopicFilter: "/sys/#", MaxAttempts: 100,
		Actions: []forward.Action{{Type: forward.ActionPostgres, URL: proxied, Table: table, CreateTable: true, Timeout: forward.Duration(2 * time.Second)}}}
	r, err = m.CreateRule(ctx, r, forward.StartAtEnd)
	if err != nil {
		t.Fatal(err)
	}
	ids := appendN(t, st, "pk1", "dk1", 4)
	eventually(t, "failed attempts", func() bool {
		s, _ := m.Status(ctx, r.ID)
		return s[0].Failures > 0
	})
	px.up()
	count := func() int {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			return -1
		}
		return n
	}
	eventually(t, "rows", func() bool { return count() == 4 })
	var (
		topic, pk string
		n         float64
	)
	if err := conn.QueryRow(ctx, "SELECT topic, product_key, (payload->'params'->>'n')::float8 FROM "+table+" WHERE log_id = $1", ids[2]).Scan(&topic, &pk, &n); err != nil {
		t.Fatal(err)
	}
	if topic != "/sys/pk1/dk1/thing/event/property/post" || pk != "pk1" || n != 2 {
		t.Fatalf("row: %s %s %v", topic, pk, n)
	}
	// Re-delivery (a replay of the same entries from the beginning) is
	// idempotent: a second rule writing the same table adds no row.
	r2 := r
	r2.Actions = []forward.Action{{Type: forward.ActionPostgres, URL: pgURL, Table: table}}
	r2, err = m.CreateRule(ctx, r2, 0)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "second rule caught up", func() bool {
		s, _ := m.Status(ctx, r2.ID)
		return s[0].Delivered == 4
	})
	if c := count(); c != 4 {
		t.Fatalf("%d rows after re-delivery, want 4", c)
	}
}
