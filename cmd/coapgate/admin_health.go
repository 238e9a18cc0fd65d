package main

import (
	"context"
	"io"
	"net/http"
	"time"
)

// cmdHealth checks a running gateway's health endpoint: exit 0 when it
// answers 200, 1 otherwise. It needs no API key, so it serves as a
// container HEALTHCHECK on an image without a shell or curl.
func cmdHealth(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("health", "", "Checks GET /api/v1/health of a running gateway: exit 0 when it answers\n200 (storage reachable), 1 otherwise. Needs no API key.", "coapgate health --api http://127.0.0.1:8080", stdout, stderr)
	timeout := c.fs.Duration("timeout", 5*time.Second, "give up after this long")
	if _, code, ok := c.parse(args, 0, 0); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	body, err := c.callNoKey(ctx, http.MethodGet, "/health")
	if err != nil {
		return c.finish(err)
	}
	if c.jsonOut {
		return c.finish(adminPrintJSON(c.stdout, body))
	}
	_, err = c.stdout.Write(append(body, '\n'))
	return c.finish(err)
}
