package main

// coapgate cert dev: a development CA and a DTLS server certificate it
// signed, for certificate clients that verify the CA and the host name.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Files written by coapgate cert dev into --out.
const (
	certCAFile     = "ca.pem"
	certCAKeyFile  = "ca.key"
	certServerFile = "server.pem"
	certServerKey  = "server.key"
)

// listFlag is a repeatable flag that also takes comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func cmdCert(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "dev" {
		fmt.Fprint(stderr, `Usage: coapgate cert dev --host NAME [--ip ADDR]... [flags]

Creates a development CA and a DTLS server certificate it signed, with the
given host names (DNS subjectAltNames) and IP addresses (IP subjectAltNames),
for certificate clients that verify the CA and the host name they dial. Give
devices ca.pem; set dtls.cert_file to server.pem and dtls.key_file to
server.key. A CA already in --out is reused, so certificates issued later
(another host, a renewal) chain to the CA devices already trust.
Keys are written with mode 0600.

Run 'coapgate cert dev --help' for the flags.
`)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return 0
		}
		return 2
	}
	fset := flag.NewFlagSet("coapgate cert dev", flag.ContinueOnError)
	fset.SetOutput(stderr)
	var hosts, ips listFlag
	fset.Var(&hosts, "host", "host `name` devices dial (DNS subjectAltName; repeatable or comma-separated; an IP address here is an IP subjectAltName)")
	fset.Var(&ips, "ip", "IP `address` devices dial (IP subjectAltName; repeatable or comma-separated)")
	out := fset.String("out", ".", "output `directory` (created 0700 if missing)")
	keyType := fset.String("key-type", "rsa", "server key: rsa (RSA 2048: RSA key transport, for clients without ECC) or ecdsa (P-256: ECDHE_ECDSA suites)")
	days := fset.Int("days", 825, "server certificate validity in `days` (the CA gets 10 years)")
	force := fset.Bool("force", false, "overwrite an existing server.pem/server.key in --out")
	fset.Usage = func() {
		fmt.Fprint(stderr, "Usage: coapgate cert dev --host NAME [--ip ADDR]... [flags]\n\nCreates a development CA (ca.pem, ca.key; reused when present) and a server\ncertificate it signed (server.pem with the CA appended, server.key) in --out.\n\nFlags:\n")
		fset.PrintDefaults()
		fmt.Fprint(stderr, "\nExample:\n  coapgate cert dev --host gw.example.net --ip 192.0.2.10 --out /etc/coapgate/dtls\n  # then: dtls.cert_file /etc/coapgate/dtls/server.pem, dtls.key_file /etc/coapgate/dtls/server.key\n")
	}
	if err := fset.Parse(args[1:]); err != nil {
		return flagExit(err)
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(stderr, "coapgate cert dev: unexpected argument %q\n", fset.Arg(0))
		return 2
	}
	req := certRequest{out: *out, keyType: *keyType, days: *days, force: *force}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			req.ips = append(req.ips, ip)
		} else {
			req.dns = append(req.dns, h)
		}
	}
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			fmt.Fprintf(stderr, "coapgate cert dev: --ip %q is not an IP address\n", s)
			return 2
		}
		req.ips = append(req.ips, ip)
	}
	switch {
	case len(req.dns)+len(req.ips) == 0:
		fmt.Fprintln(stderr, "coapgate cert dev: --host (or --ip) is required")
		return 2
	case req.keyType != "rsa" && req.keyType != "ecdsa":
		fmt.Fprintf(stderr, "coapgate cert dev: --key-type %q: must be rsa or ecdsa\n", req.keyType)
		return 2
	case req.days < 1:
		fmt.Fprintln(stderr, "coapgate cert dev: --days must be >= 1")
		return 2
	}
	res, err := writeDevChain(req)
	if err != nil {
		fmt.Fprintln(stderr, "coapgate cert dev:", err)
		return 1
	}
	if res.newCA {
		fmt.Fprintf(stdout, "created CA          %s (key %s)\n", res.caFile, res.caKey)
	} else {
		fmt.Fprintf(stdout, "reused CA           %s\n", res.caFile)
	}
	fmt.Fprintf(stdout, "server certificate  %s (key %s), %s, names %s\n\n", res.certFile, res.keyFile, req.keyType, strings.Join(res.names, ", "))
	fmt.Fprintf(stdout, "dtls:\n  cert_file: %s\n  key_file: %s\n", res.certFile, res.keyFile)
	return 0
}

type certRequest struct {
	out     string
	dns     []string
	ips     []net.IP
	keyType string
	days    int
	force   bool
}

type certResult struct {
	caFile, caKey, certFile, keyFile string
	newCA                            bool
	names                            []string
}

// writeDevChain loads or creates the CA in req.out and issues the server
// certificate.
func writeDevChain(req certRequest) (certResult, error) {
	res := certResult{
		caFile: filepath.Join(req.out, certCAFile), caKey: filepath.Join(req.out, certCAKeyFile),
		certFile: filepath.Join(req.out, certServerFile), keyFile: filepath.Join(req.out, certServerKey),
	}
	if err := os.MkdirAll(req.out, 0o700); err != nil {
		return res, fmt.Errorf("output directory: %w", err)
	}
	if !req.force {
		for _, f := range []string{res.certFile, res.keyFile} {
			if _, err := os.Stat(f); err == nil {
				return res, fmt.Errorf("%s exists (--force replaces it)", f)
			}
		}
	}
	now := time.Now()
	ca, caKey, err := loadCA(res.caFile, res.caKey)
	if errors.Is(err, fs.ErrNotExist) {
		ca, caKey, err = newCA(res.caFile, res.caKey, now)
		res.newCA = true
	}
	if err != nil {
		return res, err
	}
	var key crypto.Signer
	usage := x509.KeyUsageDigitalSignature
	if req.keyType == "rsa" {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
		usage |= x509.KeyUsageKeyEncipherment // RSA key transport
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return res, fmt.Errorf("server key: %w", err)
	}
	cn := ""
	if len(req.dns) > 0 {
		cn = req.dns[0]
	} else {
		cn = req.ips[0].String()
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"coapgate development"}},
		DNSNames:     req.dns,
		IPAddresses:  req.ips,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(0, 0, req.days),
		KeyUsage:     usage,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return res, fmt.Errorf("server certificate: %w", err)
	}
	if err := writePEMKey(res.keyFile, key); err != nil {
		return res, err
	}
	chain := append(pemBlock("CERTIFICATE", der), pemBlock("CERTIFICATE", ca.Raw)...)
	if err := os.WriteFile(res.certFile, chain, 0o644); err != nil {
		return res, fmt.Errorf("server certificate: %w", err)
	}
	// The pair must load as the gateway will load it.
	if _, err := tls.LoadX509KeyPair(res.certFile, res.keyFile); err != nil {
		return res, fmt.Errorf("check server certificate: %w", err)
	}
	res.names = append(res.names, req.dns...)
	for _, ip := range req.ips {
		res.names = append(res.names, ip.String())
	}
	return res, nil
}

// loadCA reads the CA certificate and key; fs.ErrNotExist when neither
// file is there.
func loadCA(certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	_, errC := os.Stat(certFile)
	_, errK := os.Stat(keyFile)
	if errors.Is(errC, fs.ErrNotExist) && errors.Is(errK, fs.ErrNotExist) {
		return nil, nil, fs.ErrNotExist
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("existing CA in %s: %w", filepath.Dir(certFile), err)
	}
	ca, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, fmt.Errorf("existing CA %s: %w", certFile, err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok || !ca.IsCA {
		return nil, nil, fmt.Errorf("existing CA %s is not a CA certificate with a signing key", certFile)
	}
	return ca, signer, nil
}

// newCA creates a 10-year RSA 3072 CA: RSA so that clients built without
// ECC can verify it, whichever the server key.
func newCA(certFile, keyFile string, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		return nil, nil, fmt.Errorf("CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "coapgate development CA", Organization: []string{"coapgate development"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	if err := writePEMKey(keyFile, key); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(certFile, pemBlock("CERTIFICATE", der), 0o644); err != nil {
		return nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	return ca, key, nil
}

// writePEMKey writes key as PKCS #8 PEM with mode 0600 (also when the
// file existed with a wider mode).
func writePEMKey(file string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write key: %w", err)
	}
	if _, err := f.Write(pemBlock("PRIVATE KEY", der)); err != nil {
		f.Close()
		return fmt.Errorf("write key: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	return nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n.Add(n, big.NewInt(1))
}
