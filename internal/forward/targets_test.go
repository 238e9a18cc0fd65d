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

// proxy is a TCP relay to a real service that a test can take down (close
// the listener and every relayed connection) and bring back on the same
// port, to play "target down then up".
type proxy struct {
	t      testing.TB
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
}

func newProxy(t testing.TB, target string) *proxy {
	p := &proxy{t: t, target: target}
	p.up()
	t.Cleanup(p.down)
	return p
}

func (p *proxy) up() {
	addr := p.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
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
}

func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
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
	time.Sleep(100 * time.Millisecond) // let some attempts fail
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
	time.Sleep(100 * time.Millisecond)
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
