package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a certificate for 127.0.0.1 and its key as PEM files.
func selfSigned(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "amber test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return cert, key
}

func TestSchedulerOverTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, k := range []string{"AMBER_CONFIG", "AMBER_TOKEN", "AMBER_CA", "AMBER_SCHEDULER"} {
		t.Setenv(k, "")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	data := filepath.Join(dir, "data")
	go func() {
		done <- run(ctx, []string{"scheduler", "--listen", addr, "--data", data, "--tls-cert", cert, "--tls-key", key}, io.Discard, io.Discard)
	}()
	defer func() { cancel(); <-done }()
	var tok []byte
	for i := 0; i < 100; i++ {
		if tok, err = os.ReadFile(filepath.Join(data, "token")); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Setenv("AMBER_SCHEDULER", "https://"+addr)
	t.Setenv("AMBER_TOKEN", strings.TrimSpace(string(tok)))
	var lsErr error
	for i := 0; i < 100; i++ { // wait for the listener
		if _, lsErr = capture(t, "ls"); lsErr == nil || strings.Contains(lsErr.Error(), "certificate") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if lsErr == nil || !strings.Contains(lsErr.Error(), "certificate") {
		t.Fatalf("ls over HTTPS without the CA: %v, want a certificate error", lsErr)
	}
	t.Setenv("AMBER_CA", cert)
	if out, err := capture(t, "ls"); err != nil || !strings.Contains(out, "NAME") {
		t.Fatalf("ls over HTTPS with the CA: %q %v", out, err)
	}
	// A certificate without its key is refused at start.
	if err := run(ctx, []string{"scheduler", "--data", data, "--tls-cert", cert}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "tls-key") {
		t.Errorf("cert without key: %v", err)
	}
}

func capture(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out strings.Builder
	err := run(context.Background(), args, &out, io.Discard)
	return out.String(), err
}
