package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgate/coapgate/sdk"
)

// runDTLSLoad is the DTLS load generator behind docs/BENCHMARKS.md: full
// PSK handshakes per second, uplinks per second over established sessions,
// and idle sessions held open for a memory reading of the server.
func runDTLSLoad(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet(e, "dtls-load", "[flags]", `
Load a gateway's DTLS-PSK listener as one device (--product/--device/--secret,
or the COAPDEV_* variables), with --sessions sessions opened by --concurrency
workers. Prints one line per phase:

  handshakes: N in T (R/s) p50=… p99=…
  uplinks: N in T (R/s) p50=… p99=…      (with --uplinks > 0)
  holding N idle sessions for D          (with --hold > 0)

Every session makes a full handshake (cookie exchange included). With
--uplinks M each session then sends M confirmable publishes, one at a time.
With --hold the sessions stay open and idle for that long before they close.
Run the gateway with --dtls.handshake-rate 0: all sessions come from one
address.`, `
  coapdev dtls-load --server 127.0.0.1:5684 --sessions 5000 --concurrency 64 --hold 60s`)
	d := addDeviceFlags(fs)
	sessions := fs.Int("sessions", 1000, "sessions to open")
	conc := fs.Int("concurrency", 32, "handshakes (and publishing sessions) in parallel")
	uplinks := fs.Int("uplinks", 0, "confirmable publishes per session after the handshakes")
	hold := fs.Duration("hold", 0, "keep the sessions open and idle this long")
	closeEach := fs.Bool("close", false, "close each session right after its handshake (pure handshake rate)")
	if code, ok := parseFlags(e, fs, args); !ok {
		return code
	}
	d.applyEnv(e.getenv)
	d.dtls = true
	if msg := d.resolve(fs); msg != "" {
		return usageError(e, fs, "%s", msg)
	}
	if m := d.missing(); len(m) > 0 {
		return usageError(e, fs, "missing %v", m)
	}
	if *sessions < 1 || *conc < 1 {
		return usageError(e, fs, "--sessions and --concurrency must be >= 1")
	}
	p := sdk.DTLSPSK{ProductKey: d.product, DeviceName: d.device, Secret: d.secret, Lifetime: time.Duration(d.lifetime) * time.Second}
	clients := make([]*sdk.Client, *sessions)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	var failed atomic.Int64
	lat := make([]time.Duration, *sessions)
	next := atomic.Int64{}
	start := time.Now()
	var wg sync.WaitGroup
	for range *conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= *sessions || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				hctx, cancel := context.WithTimeout(ctx, d.timeout)
				c, err := sdk.Dial(hctx, d.server, sdk.WithDTLSPSK(p))
				cancel()
				lat[i] = time.Since(t0)
				if err != nil {
					failed.Add(1)
					continue
				}
				if *closeEach {
					c.Close()
					continue
				}
				clients[i] = c
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	ok := int64(*sessions) - failed.Load()
	fmt.Fprintf(e.stdout, "handshakes: %d in %v (%.0f/s) %s failed=%d\n", ok, el.Round(time.Millisecond), float64(ok)/el.Seconds(), percentiles(lat), failed.Load())

	if *uplinks > 0 {
		topic := "/" + d.product + "/" + d.device + "/user/load"
		body := []byte(`{"id":"1","params":{"v":1234567890}}`)
		ulat := make([][]time.Duration, *sessions)
		var ufail atomic.Int64
		next.Store(0)
		start = time.Now()
		for range *conc {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= *sessions || ctx.Err() != nil {
						return
					}
					if clients[i] == nil {
						continue
					}
					for range *uplinks {
						t0 := time.Now()
						if _, err := clients[i].Publish(ctx, topic, body); err != nil {
							ufail.Add(1)
						}
						ulat[i] = append(ulat[i], time.Since(t0))
					}
				}
			})
		}
		wg.Wait()
		el = time.Since(start)
		all := slices.Concat(ulat...)
		n := int64(len(all)) - ufail.Load()
		fmt.Fprintf(e.stdout, "uplinks: %d in %v (%.0f/s) %s failed=%d\n", n, el.Round(time.Millisecond), float64(n)/el.Seconds(), percentiles(all), ufail.Load())
	}
	if *hold > 0 && !*closeEach {
		fmt.Fprintf(e.stdout, "holding %d idle sessions for %v\n", ok, *hold)
		select {
		case <-ctx.Done():
		case <-time.After(*hold):
		}
	}
	if failed.Load() > 0 {
		return exitError
	}
	return exitOK
}

func percentiles(d []time.Duration) string {
	if len(d) == 0 {
		return ""
	}
	s := slices.Clone(d)
	slices.Sort(s)
	q := func(f float64) time.Duration {
		return s[min(len(s)-1, int(f*float64(len(s))))].Round(10 * time.Microsecond)
	}
	return fmt.Sprintf("p50=%v p99=%v", q(0.50), q(0.99))
}
