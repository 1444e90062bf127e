package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net/http"
	"os"

	"github.com/amberfn/amber/api"
)

// tlsFlags are a server's certificate and the CA its clients trust.
type tlsFlags struct {
	cert, key, ca *string
}

func addTLSFlags(fs *flag.FlagSet, peer string) tlsFlags {
	return tlsFlags{
		cert: fs.String("tls-cert", "", "serve HTTPS with this certificate (PEM)"),
		key:  fs.String("tls-key", "", "the certificate's private key (PEM)"),
		ca:   fs.String("ca", "", "trust this CA (PEM) when calling "+peer+" over HTTPS ($AMBER_CA)"),
	}
}

func (t tlsFlags) check() error {
	if (*t.cert == "") != (*t.key == "") {
		return fmt.Errorf("tls: --tls-cert and --tls-key go together")
	}
	if *t.cert != "" {
		if _, err := tls.LoadX509KeyPair(*t.cert, *t.key); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
	}
	return nil
}

// httpClient trusts the system roots plus the CA in file ("" : system only).
func httpClient(caFile string) (*http.Client, error) {
	tr := api.NewTransport()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca %s: no PEM certificate in it", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}, nil
}
