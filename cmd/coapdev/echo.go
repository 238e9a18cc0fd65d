package main

import (
	"context"
	"fmt"
	"net"
)

// runEcho is a trivial CoAP server: every CON gets a piggybacked 2.04 ACK
// with its Message ID and token, nothing else. It shows how far the load
// generator goes when the server costs next to nothing.
func runEcho(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet(e, "echo", "[flags]", `
Answer every confirmable request with an empty 2.04 ACK (same Message ID and
token). No resources, no state: a yardstick for coapdev bench itself.`, `
  coapdev echo --listen 127.0.0.1:5699 &
  coapdev bench --mode plain --server 127.0.0.1:5699`)
	listen := fs.String("listen", "127.0.0.1:5699", "UDP `address` to listen on")
	if code, ok := parseFlags(e, fs, args); !ok {
		return code
	}
	pc, err := net.ListenPacket("udp", *listen)
	if err != nil {
		fmt.Fprintf(e.stderr, "coapdev echo: %v\n", err)
		return exitError
	}
	conn := pc.(*net.UDPConn)
	conn.SetReadBuffer(4 << 20)
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	fmt.Fprintf(e.stderr, "coapdev echo: listening on %s\n", conn.LocalAddr())
	buf := make([]byte, 2048)
	out := make([]byte, 12)
	for {
		n, addr, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return exitOK
			}
			continue
		}
		b := buf[:n]
		if n < 4 || b[0]>>6 != 1 || b[0]>>4&3 != 0 {
			continue // only CONs get an answer
		}
		tkl := int(b[0] & 0x0f)
		if tkl > 8 || n < 4+tkl {
			continue
		}
		o := out[:4+tkl]
		o[0] = 1<<6 | 2<<4 | byte(tkl) // ACK
		o[1] = 2<<5 | 4                // 2.04
		o[2], o[3] = b[2], b[3]
		copy(o[4:], b[4:4+tkl])
		conn.WriteToUDPAddrPort(o, addr)
	}
}
