package console

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func newTestServer(t *testing.T) *httptest.Server {
	t.Helper()
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-From", "api")
		io.WriteString(w, r.URL.Path)
	})
	srv := httptest.NewServer(New(api))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, srv *httptest.Server, method, path string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestRouting(t *testing.T) {
	srv := newTestServer(t)
	for _, p := range []string{"/api/v1/health", "/api/v1/devices/a/b", "/metrics"} {
		resp, body := get(t, srv, "GET", p, nil)
		if resp.Header.Get("X-From") != "api" || body != p {
			t.Errorf("%s not passed to the API: %q", p, body)
		}
		if resp.Header.Get("Content-Security-Policy") != "" {
			t.Errorf("%s: API response got the console's CSP", p)
		}
	}
	for _, tc := range []struct {
		method, path string
		status       int
		ctype        string
	}{
		{"GET", "/", 200, "text/html"},
		{"HEAD", "/", 200, "text/html"},
		{"GET", "/index.html", 200, "text/html"},
		{"GET", "/assets/js/app.js", 200, "text/javascript"},
		{"GET", "/assets/console.css", 200, "text/css"},
		{"GET", "/assets/vendor/uPlot.iife.min.js", 200, "text/javascript"},
		{"GET", "/assets/nope.js", 404, ""},
		{"GET", "/assets/../console.go", 404, ""},
		{"GET", "/other", 404, ""},
		{"POST", "/", 405, ""},
	} {
		resp, _ := get(t, srv, tc.method, tc.path, nil)
		if resp.StatusCode != tc.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.ctype) {
			t.Errorf("%s %s = %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.status, tc.ctype)
		}
		for _, h := range []string{"Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"} {
			if resp.Header.Get(h) == "" {
				t.Errorf("%s %s: no %s header", tc.method, tc.path, h)
			}
		}
	}
}

func TestCSP(t *testing.T) {
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "require-trusted-types-for 'script'"} {
		if !strings.Contains(CSP, want) {
			t.Errorf("CSP lacks %q", want)
		}
	}
	if strings.Contains(CSP, "unsafe") {
		t.Errorf("CSP allows something unsafe: %s", CSP)
	}
}

func TestETag(t *testing.T) {
	srv := newTestServer(t)
	resp, _ := get(t, srv, "GET", "/assets/js/app.js", nil)
	etag := resp.Header.Get("ETag")
	if etag == "" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("ETag %q Cache-Control %q", etag, resp.Header.Get("Cache-Control"))
	}
	resp, body := get(t, srv, "GET", "/assets/js/app.js", map[string]string{"If-None-Match": etag})
	if resp.StatusCode != http.StatusNotModified || body != "" {
		t.Fatalf("revalidation = %d with %d bytes, want 304", resp.StatusCode, len(body))
	}
}

// TestVendoredChecksums checks the vendored files against SHA256SUMS, the
// sums of the files as the npm package ships them (VENDOR.md).
func TestVendoredChecksums(t *testing.T) {
	f, err := assets.Open("assets/vendor/SHA256SUMS")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("bad line %q", sc.Text())
		}
		b, err := fs.ReadFile(assets, "assets/vendor/"+name)
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.Sum256(b)
		if hex.EncodeToString(got[:]) != sum {
			t.Errorf("%s: sha256 %x, want %s (a vendored file was changed)", name, got, sum)
		}
		n++
	}
	if n == 0 {
		t.Fatal("SHA256SUMS lists nothing")
	}
}

// TestNoHTMLInjectionSinks keeps the console's own code free of the APIs
// that parse strings as HTML or code, and its page free of inline script
// and style (which the CSP would block anyway).
func TestNoHTMLInjectionSinks(t *testing.T) {
	sinks := regexp.MustCompile(`\.innerHTML|\.outerHTML\s*=|insertAdjacentHTML|document\.write|\beval\(|new Function\(|setTimeout\(\s*['"]`)
	n := 0
	err := fs.WalkDir(assets, "assets/js", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(assets, p)
		if err != nil {
			return err
		}
		n++
		if m := sinks.Find(b); m != nil {
			t.Errorf("%s uses %s", p, m)
		}
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("walk: %v (%d files)", err, n)
	}
	html, _ := fs.ReadFile(assets, "assets/index.html")
	if regexp.MustCompile(`<script(?:\s+type="module")?>|<style|\sstyle=|\son[a-z]+=`).Match(html) {
		t.Error("index.html has inline script, style or event handler attributes")
	}
}
