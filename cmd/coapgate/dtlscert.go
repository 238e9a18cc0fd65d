package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/coapgate/coapgate/internal/config"
)

// Names of the development certificate generated into the data dir.
const (
	devCertFile = "dtls-cert.pem"
	devKeyFile  = "dtls-key.pem"
)

// loadDTLSCert returns the DTLS server certificate: dtls.cert_file and
// dtls.key_file when set; else the development certificate in DataDir,
// generated (self-signed ECDSA P-256) on first start.
func loadDTLSCert(cfg config.Config, log *slog.Logger) (*tls.Certificate, error) {
	certFile, keyFile := cfg.DTLS.CertFile, cfg.DTLS.KeyFile
	if certFile == "" {
		certFile, keyFile = filepath.Join(cfg.DataDir, devCertFile), filepath.Join(cfg.DataDir, devKeyFile)
		if _, err := os.Stat(certFile); errors.Is(err, os.ErrNotExist) {
			if err := writeDevCert(certFile, keyFile); err != nil {
				return nil, fmt.Errorf("generate dtls development certificate: %w", err)
			}
			log.Warn("generated a self-signed DTLS development certificate; set dtls.cert_file and dtls.key_file for production", "cert", certFile, "key", keyFile)
		}
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("dtls certificate: %w", err)
	}
	return &c, nil
}

func writeDevCert(certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "coapgate development", Organization: []string{"coapgate"}},
		DNSNames:     []string{"localhost", host},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}
