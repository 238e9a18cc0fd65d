package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/sdk"
)

// TestClusterSharedState: two nodes on one PostgreSQL schema share the
// state a device's traffic makes, whichever node it reaches:
//   - replay: a symmetric-mode sequence number accepted by one node is
//     refused by the other although both hold the session in memory, and
//     the same numbers sent to both at once are each accepted once;
//   - presence: one online and one offline transition for a device talking
//     to both nodes, and both nodes' API answer the same online state;
//   - push: a command created through n1 is pushed (server CON) by n2,
//     which holds the device's session, and is recorded delivered by push.
func TestClusterSharedState(t *testing.T) {
	c := startCluster(t, 2, "COAPGATE_AUTH_ONLINE_LIFETIME=3s")
	n1, n2 := c.nodes[0], c.nodes[1]
	var prod struct{ ProductKey string }
	c.call(n1, "POST", "/products", map[string]any{"name": "shared"}, &prod)
	newDev := func(dk string) (string, string) {
		var dev struct{ DeviceKey, DeviceSecret string }
		c.call(n1, "POST", "/devices", map[string]any{"productKey": prod.ProductKey, "deviceKey": dk}, &dev)
		return dev.DeviceKey, dev.DeviceSecret
	}
	topicOf := func(dk string) string { return "/sys/" + prod.ProductKey + "/" + dk + "/thing/event/property/post" }
	stored := func(dk string) int {
		var page struct{ Items []struct{ ID string } }
		c.call(n2, "GET", "/devices/"+prod.ProductKey+"/"+dk+"/messages?limit=1000", nil, &page)
		return len(page.Items)
	}

	t.Run("replay", func(t *testing.T) {
		dk, ds := newDev("sym")
		sc, err := sdk.Dial(context.Background(), n1.coap.String(), sdk.WithSymmetric(),
			sdk.WithCredentials(sdk.Credentials{ProductKey: prod.ProductKey, DeviceName: dk, DeviceSecret: ds}))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := sc.Auth(context.Background())
		ss, _ := sc.SymmetricSession()
		sc.Close()
		if err != nil {
			t.Fatalf("symmetric auth through n1: %v", err)
		}
		key := symKey(ds, ss.Random)
		conns := []*net.UDPConn{udpConn(t, n1.coap), udpConn(t, n2.coap)}
		var midMu sync.Mutex
		mid := int32(1000)
		send := func(node int, seq uint64) codes.Code {
			t.Helper()
			midMu.Lock()
			mid++
			m := symUplink(t, mid, tok, key, seq, fmt.Appendf(nil, `{"id":"%d","params":{"s":%d}}`, seq, seq), topicOf(dk))
			midMu.Unlock()
			return rawExchange(t, conns[node], m).Code
		}
		want := func(node int, seq uint64, code codes.Code) {
			t.Helper()
			if got := send(node, seq); got != code {
				t.Fatalf("seq %d through n%d: %v, want %v", seq, node+1, got, code)
			}
		}
		s0 := ss.SeqOffset
		want(0, s0, codes.Changed)
		want(1, s0+1, codes.Changed) // n2 rebuilt the session; both hold it now
		want(0, s0+5, codes.Changed)
		want(1, s0+5, codes.Unauthorized) // n2's window never saw it: the stored one did
		want(1, s0+6, codes.Changed)
		want(0, s0+6, codes.Unauthorized)
		want(0, s0+2, codes.Changed) // inside the window, unused
		// Both nodes get every number at once: each is accepted once.
		const burst = 40
		var wg sync.WaitGroup
		var accepted [2][burst]bool
		for node := range 2 {
			wg.Go(func() {
				for i := range burst {
					accepted[node][i] = send(node, s0+10+uint64(i)) == codes.Changed
				}
			})
		}
		wg.Wait()
		for i := range burst {
			if accepted[0][i] == accepted[1][i] {
				t.Errorf("seq %d accepted by both or neither node (n1 %v, n2 %v)", s0+10+uint64(i), accepted[0][i], accepted[1][i])
			}
		}
		if n := stored(dk); n != 5+burst {
			t.Fatalf("stored %d uplinks, want %d (each number once)", n, 5+burst)
		}
	})

	t.Run("replay of option 2101", func(t *testing.T) {
		dk, ds := newDev("e")
		conns := []*net.UDPConn{udpConn(t, n1.coap), udpConn(t, n2.coap)}
		mid := int32(2000)
		ex := func(node int, m message.Message) *message.Message {
			t.Helper()
			mid++
			m.MessageID, m.Type = mid, message.Confirmable
			return rawExchange(t, conns[node], m)
		}
		r := ex(0, message.Message{Code: codes.POST, Options: message.Options{
			{ID: message.URIPath, Value: []byte("auth")}, {ID: message.URIPath, Value: []byte(prod.ProductKey)}, {ID: message.URIPath, Value: []byte(dk)},
			{ID: message.ContentFormat, Value: coapx.EncodeUint(50)},
		}, Payload: []byte(`{"secureMode":2,"lifetime":3600,"sign":"` + signE(prod.ProductKey, dk, "3600", "2", ds) + `"}`)})
		var ar struct{ Token string }
		if r.Code != codes.Content || json.Unmarshal(r.Payload, &ar) != nil || ar.Token == "" {
			t.Fatalf("dialect E auth through n1: %v %s", r.Code, r.Payload)
		}
		want := func(node, n int, code codes.Code) {
			t.Helper()
			opts := append(topicOpts("", 2088, topicOf(dk)).Remove(2088), message.Option{ID: 2101, Value: opt2101(t, ds, dialectAIV, ar.Token, n)})
			if r := ex(node, message.Message{Code: codes.POST, Token: []byte{6}, Options: opts, Payload: []byte(`{"id":"1","params":{}}`)}); r.Code != code {
				t.Fatalf("N=%d through n%d: %v, want %v", n, node+1, r.Code, code)
			}
		}
		want(0, 1, codes.Changed)
		want(1, 2, codes.Changed) // both nodes hold the session now
		want(0, 5, codes.Changed)
		want(1, 5, codes.Unauthorized) // strictly increasing across the nodes
		want(1, 4, codes.Unauthorized)
		want(1, 6, codes.Changed)
		want(0, 6, codes.Unauthorized)
		if n := stored(dk); n != 4 {
			t.Fatalf("stored %d uplinks, want 4", n)
		}
	})

	t.Run("push by the session holder", func(t *testing.T) {
		dk, ds := newDev("pushed")
		tok := sdkToken(t, n2.coap.String(), prod.ProductKey, dk, ds)
		// The device: one socket, talking to n2 only, sending an uplink
		// every few hundred milliseconds (it stays online there) and
		// acknowledging any CON the server sends it.
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		write := func(m message.Message, to *net.UDPAddr) {
			b := make([]byte, 2048)
			k, err := coder.DefaultCoder.Encode(m, b)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = conn.WriteToUDP(b[:k], to)
		}
		type push struct {
			from  string
			topic string
		}
		pushes := make(chan push, 4)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { // the device's receive side
			buf := make([]byte, 2048)
			for ctx.Err() == nil {
				_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				k, from, err := conn.ReadFromUDP(buf)
				if err != nil {
					continue
				}
				m := message.Message{Options: make(message.Options, 0, 16)}
				if _, err := coder.DefaultCoder.Decode(buf[:k], &m); err != nil || m.Type != message.Confirmable || m.Code != codes.POST {
					continue // the answers to its own uplinks
				}
				write(message.Message{Type: message.Acknowledgement, Code: codes.Changed, MessageID: m.MessageID, Token: m.Token}, from)
				p, _ := m.Options.Path()
				select {
				case pushes <- push{from: from.String(), topic: p}:
				default:
				}
			}
		})
		wg.Go(func() { // the device's uplinks, to n2
			for i := 0; ctx.Err() == nil; i++ {
				m := message.Message{Type: message.NonConfirmable, Code: codes.POST, MessageID: int32(3000 + i), Token: []byte{5, byte(i)},
					Options: topicOpts(tok, 2088, topicOf(dk)), Payload: fmt.Appendf(nil, `{"id":"%d","params":{"p":%d}}`, i, i)}
				sortOptions(m.Options)
				write(m, n2.coap)
				select {
				case <-ctx.Done():
				case <-time.After(300 * time.Millisecond):
				}
			}
		})
		defer func() { cancel(); wg.Wait() }()
		for end := time.Now().Add(60 * time.Second); stored(dk) == 0; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatal("the device's uplinks never reached n2")
			}
		}
		var cmd struct{ ID, Topic string }
		c.call(n1, "POST", "/devices/"+prod.ProductKey+"/"+dk+"/commands",
			map[string]any{"type": "setProperties", "params": map[string]any{"x": 1}}, &cmd)
		select {
		case p := <-pushes:
			if p.from != n2.coap.String() {
				t.Fatalf("pushed from %s, want n2 (%s), the node holding the session", p.from, n2.coap)
			}
			if p.topic != "/topic"+cmd.Topic {
				t.Fatalf("pushed to %s, want /topic%s", p.topic, cmd.Topic)
			}
		case <-time.After(60 * time.Second): // a hang guard
			t.Fatal("no node pushed the command created through n1 to the device live on n2")
		}
		for end := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			var got struct{ State, DeliveredVia string }
			c.call(n1, "GET", "/devices/"+prod.ProductKey+"/"+dk+"/commands/"+cmd.ID, nil, &got)
			if got.DeliveredVia == "push" {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("command %+v never recorded delivered by push", got)
			}
		}
	})

	t.Run("presence", func(t *testing.T) {
		dk, ds := newDev("roaming")
		tok := sdkToken(t, n1.coap.String(), prod.ProductKey, dk, ds)
		conns := []*net.UDPConn{udpConn(t, n1.coap), udpConn(t, n2.coap)}
		for i := range 6 { // the device alternates between the nodes
			clusterUplink(t, conns[i%2], int32(4000+i), tok, topicOf(dk), i)
		}
		type ev struct{ Type string }
		events := func(nd *clusterNode) []string {
			var page struct{ Items []ev }
			c.call(nd, "GET", "/devices/"+prod.ProductKey+"/"+dk+"/events", nil, &page)
			var out []string
			for _, e := range page.Items {
				out = append(out, e.Type)
			}
			return out
		}
		online := func(nd *clusterNode) bool {
			var d struct{ Online bool }
			c.call(nd, "GET", "/devices/"+prod.ProductKey+"/"+dk, nil, &d)
			return d.Online
		}
		waitEvents := func(want ...string) {
			t.Helper()
			for end := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				got := events(n1)
				if fmt.Sprint(got) == fmt.Sprint(want) {
					return
				}
				if len(got) > len(want) || time.Now().After(end) {
					t.Fatalf("events %v, want %v", got, want)
				}
			}
		}
		waitEvents("online")
		// Silent now: offline once, found by the node holding the lease.
		waitEvents("online", "offline")
		for _, nd := range c.nodes {
			if online(nd) {
				t.Fatalf("%s reports the device online after its offline transition", nd.name)
			}
		}
		clusterUplink(t, conns[1], 4100, tok, topicOf(dk), 100)
		waitEvents("online", "offline", "online")
		// Both nodes answer from the shared presence: the same last contact
		// (the one through n2), whichever node is asked.
		var d1, d2 struct {
			LastSeenAt  time.Time
			LastAddress string
		}
		c.call(n1, "GET", "/devices/"+prod.ProductKey+"/"+dk, nil, &d1)
		c.call(n2, "GET", "/devices/"+prod.ProductKey+"/"+dk, nil, &d2)
		if !d1.LastSeenAt.Equal(d2.LastSeenAt) || d1.LastAddress != d2.LastAddress || d1.LastAddress != conns[1].LocalAddr().String() {
			t.Fatalf("n1 answers %+v, n2 %+v; want the same last contact, through n2 from %s", d1, d2, conns[1].LocalAddr())
		}
	})
}

// sortOptions orders options by number, as the CoAP encoding needs.
func sortOptions(o message.Options) {
	for i := 1; i < len(o); i++ {
		for j := i; j > 0 && o[j].ID < o[j-1].ID; j-- {
			o[j], o[j-1] = o[j-1], o[j]
		}
	}
}

// exchangeRefusingPushes is rawExchange for a device that answers any
// command the server pushes meanwhile (the node holding its session pushes
// the commands created through any node) with RST, so the command stays
// pending and is announced with option 2100 instead.
func exchangeRefusingPushes(t *testing.T, conn *net.UDPConn, m message.Message) *message.Message {
	t.Helper()
	sortOptions(m.Options)
	b := make([]byte, 2048)
	n, err := coder.DefaultCoder.Encode(m, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(b[:n]); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for end := time.Now().Add(10 * time.Second); ; {
		_ = conn.SetReadDeadline(end)
		k, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		r := &message.Message{Options: make(message.Options, 0, 16)}
		if _, err := coder.DefaultCoder.Decode(append([]byte(nil), buf[:k]...), r); err != nil {
			t.Fatal(err)
		}
		if r.Type == message.Confirmable && r.Code == codes.POST { // a push
			rst := make([]byte, 16)
			k, _ := coder.DefaultCoder.Encode(message.Message{Type: message.Reset, Code: codes.Empty, MessageID: r.MessageID}, rst)
			_, _ = conn.Write(rst[:k])
			continue
		}
		if r.MessageID == m.MessageID {
			return r
		}
	}
}
