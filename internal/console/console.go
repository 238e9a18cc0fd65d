// Package console serves the web console: static HTML, CSS and ES modules
// embedded in the binary, served next to the management API on the same
// listener. The console has no server-side logic of its own: the browser
// signs in with an API key and calls /api/v1 like any other client, so it
// can do nothing the API does not allow.
package console

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
)

//go:embed assets
var assets embed.FS

// CSP is the Content-Security-Policy of every console response: scripts,
// styles and connections from this origin only, no inline script or style,
// no framing, and Trusted Types with no policy, so that no string can reach
// an HTML or script sink (innerHTML and the like throw).
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; " +
	"frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'"

// New returns a handler serving the console at / and passing /api/ and
// /metrics to api.
func New(api http.Handler) http.Handler {
	return &handler{api: api}
}

type handler struct {
	api   http.Handler
	once  sync.Once
	etags map[string]string // asset path -> strong ETag
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if strings.HasPrefix(p, "/api/") || p == "/api" || p == "/metrics" {
		h.api.ServeHTTP(w, r)
		return
	}
	setSecurityHeaders(w.Header())
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := ""
	switch {
	case p == "/" || p == "/index.html":
		name = "assets/index.html"
	case strings.HasPrefix(p, "/assets/"):
		name = path.Clean(strings.TrimPrefix(p, "/"))
	}
	if name == "" || !strings.HasPrefix(name, "assets/") {
		http.NotFound(w, r)
		return
	}
	b, err := fs.ReadFile(assets, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	h.once.Do(h.computeETags)
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	// Revalidate every time: a new binary may bring new assets under the
	// same names; the ETag makes the revalidation cheap.
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", h.etags[name])
	if match := r.Header.Get("If-None-Match"); match != "" && match == h.etags[name] {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(b)
}

func (h *handler) computeETags() {
	h.etags = make(map[string]string)
	_ = fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(assets, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		h.etags[p] = `"` + hex.EncodeToString(sum[:12]) + `"`
		return nil
	})
}

// setSecurityHeaders sets the headers of every console response.
func setSecurityHeaders(hd http.Header) {
	hd.Set("Content-Security-Policy", CSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
	hd.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()")
}
