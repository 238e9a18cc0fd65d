// Command hooksink is a webhook receiver for benchmarks: it answers every
// POST with 204 and counts them (and their distinct X-Coapgate-Delivery
// keys); GET /count prints "requests distinct".
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"sync"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:9099", "address to listen on")
	flag.Parse()
	var (
		mu   sync.Mutex
		reqs int
		seen = map[string]struct{}{}
	)
	http.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		reqs++
		seen[r.Header.Get("X-Coapgate-Delivery")] = struct{}{}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	http.HandleFunc("GET /count", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, "%d %d\n", reqs, len(seen))
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}
