package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/internal/pgstore/pgtest"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// tcpRelay forwards TCP connections from a loopback address to target. Down
// closes the listener and cuts every connection (the server "dies"); Up
// listens again on the same address.
type tcpRelay struct {
	t      *testing.T
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newTCPRelay(t *testing.T, target string) *tcpRelay {
	t.Helper()
	r := &tcpRelay{t: t, target: target, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.serve(ln)
	t.Cleanup(r.Down)
	return r
}

func (r *tcpRelay) serve(ln net.Listener) {
	r.mu.Lock()
	r.ln = ln
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", r.target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns[c], r.conns[up] = struct{}{}, struct{}{}
			r.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				defer r.wg.Done()
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			r.wg.Add(2)
			go pipe(up, c)
			go pipe(c, up)
		}
	}()
}

// Down stops accepting and closes every relayed connection; it returns
// once every relay goroutine has ended.
func (r *tcpRelay) Down() {
	r.mu.Lock()
	if r.ln != nil {
		r.ln.Close()
		r.ln = nil
	}
	for c := range r.conns {
		c.Close()
	}
	clear(r.conns)
	r.mu.Unlock()
	r.wg.Wait()
}

// Up listens on the relay's address again.
func (r *tcpRelay) Up() {
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatalf("relay up: %v", err)
	}
	r.serve(ln)
}

// relayedPostgres returns a fresh schema's URL routed through a relay.
func relayedPostgres(t *testing.T) (string, *tcpRelay) {
	t.Helper()
	u, err := url.Parse(pgtest.Schema(t))
	if err != nil {
		t.Fatal(err)
	}
	host := u.Host
	if !strings.Contains(host, ":") {
		host += ":5432"
	}
	r := newTCPRelay(t, host)
	u.Host = r.addr
	return u.String(), r
}

// TestE2EPostgresDownAndBack: with PostgreSQL unreachable a device gets
// 5.03 with the configured Max-Age (never a 2.xx for an uplink that is not
// stored) and the API 503 with a JSON error; once PostgreSQL is back the
// same gateway serves again without a restart.
func TestE2EPostgresDownAndBack(t *testing.T) {
	pgURL, relay := relayedPostgres(t)
	g := startTestGateway(t, func(c *config.Config) {
		c.Store.Driver = "postgres"
		c.Store.PostgresURL = config.Secret(pgURL)
		c.Store.UnavailableMaxAge = 17e9 // 17s
	})
	d := g.newDevice("", "pg_1")
	tok, err := g.dial(d).Auth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	conn := udpConn(t, g.s.CoAPAddr())
	topic := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
	mid := uint16(100)
	publish := func(body string) *message.Message {
		mid++
		return rawExchange(t, conn, message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: int32(mid),
			Token: []byte{byte(mid >> 8), byte(mid)}, Options: topicOpts(tok, 61, topic), Payload: []byte(body)})
	}
	if r := publish(`{"id":"before"}`); r.Code != codes.Changed {
		t.Fatalf("publish before the outage: %v", r.Code)
	}

	relay.Down()
	r := publish(`{"id":"during"}`)
	if r.Code != codes.ServiceUnavailable {
		t.Fatalf("publish with PostgreSQL down: %v, want 5.03", r.Code)
	}
	if age, ok := coapx.Uint(r.Options, message.MaxAge); !ok || age != 17 {
		t.Fatalf("5.03 Max-Age = %d, %v; want 17", age, ok)
	}
	var apiErr struct{ Code, Message string }
	if code := g.api("GET", "/api/v1/devices/"+d.pk+"/"+d.dk+"/messages", nil, &apiErr); code != 503 || apiErr.Code != "unavailable" {
		t.Fatalf("API with PostgreSQL down: %d %+v, want 503 unavailable", code, apiErr)
	}
	if strings.Contains(apiErr.Message, relay.addr) || strings.Contains(apiErr.Message, "postgres") {
		t.Fatalf("503 message leaks connection details: %q", apiErr.Message)
	}

	relay.Up()
	// The pool may hand out connections that died with the relay; each
	// fails once and is discarded, so the gateway serves again within a
	// bounded number of requests.
	var after *message.Message
	for range 20 {
		if after = publish(`{"id":"after"}`); after.Code == codes.Changed {
			break
		}
		if after.Code != codes.ServiceUnavailable {
			t.Fatalf("publish after recovery: %v", after.Code)
		}
	}
	if after.Code != codes.Changed {
		t.Fatalf("gateway did not recover: %v", after.Code)
	}
	var got []string
	for _, m := range g.messages(d) {
		got = append(got, string(m.PayloadBase64))
	}
	if len(got) != 2 || got[0] != `{"id":"before"}` || got[1] != `{"id":"after"}` {
		t.Fatalf("stored %q, want before and after only", got)
	}
}
