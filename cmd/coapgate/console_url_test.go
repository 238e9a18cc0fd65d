package main

import "testing"

func TestConsoleURL(t *testing.T) {
	for in, want := range map[string]string{
		"[::]:8080":      "http://127.0.0.1:8080/",
		"0.0.0.0:8080":   "http://127.0.0.1:8080/",
		"127.0.0.1:9000": "http://127.0.0.1:9000/",
		"[::1]:8080":     "http://[::1]:8080/",
		"10.1.2.3:80":    "http://10.1.2.3:80/",
	} {
		if got := consoleURL(in); got != want {
			t.Errorf("consoleURL(%q) = %q, want %q", in, got, want)
		}
	}
}
