package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeKeyPair writes a self-signed certificate and its key as cert.pem
// and key.pem in dir.
func writeKeyPair(t *testing.T, dir string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sluice test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "cert.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, filepath.Join(dir, "key.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
}

// TestCheckRefusesWhatServeRefuses: every setting serve fails on before
// binding (unreadable TLS files, a Redis port out of range) fails check
// too, naming the field and the line that set it.
func TestCheckRefusesWhatServeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string // config.yaml; "cert.pem" and "key.pem" exist beside it
		env  env
		want string // in the output; FILE stands for the config path
	}{
		{
			name: "grpc key pair missing",
			body: "grpc:\n  tls:\n    cert_file: missing-cert.pem\n    key_file: missing-key.pem\n",
			want: "FILE:3: grpc.tls.cert_file: load key pair",
		},
		{
			name: "grpc client CA missing",
			body: "grpc:\n  tls:\n    cert_file: cert.pem\n    key_file: key.pem\n    client_ca_file: missing-ca.pem\n",
			want: "FILE:5: grpc.tls.client_ca_file:",
		},
		{
			name: "grpc client CA not PEM",
			body: "grpc:\n  tls:\n    cert_file: cert.pem\n    key_file: key.pem\n    client_ca_file: config.yaml\n",
			want: "FILE:5: grpc.tls.client_ca_file:",
		},
		{
			name: "redis CA missing",
			body: "redis:\n  url: rediss://127.0.0.1:6380\n  tls:\n    ca_file: missing-ca.pem\n",
			want: "FILE:4: redis.tls.ca_file:",
		},
		{
			name: "redis key pair missing",
			body: "redis:\n  url: rediss://127.0.0.1:6380\n  tls:\n    cert_file: missing-cert.pem\n    key_file: missing-key.pem\n",
			want: "FILE:4: redis.tls.cert_file:",
		},
		{
			name: "redis port out of range in the file",
			body: "log:\n  level: info\nredis:\n  url: redis://h:99999\n",
			want: "FILE:4: redis.url:",
		},
		{
			name: "redis port out of range in the environment",
			body: "log:\n  level: info\n",
			env:  env{"SLUICE_REDIS_URL": "redis://h:99999"},
			want: "SLUICE_REDIS_URL: redis.url:",
		},
		{
			name: "redis sentinel port out of range",
			body: "redis:\n  url: redis+sentinel://h:1,h:70000/m\n",
			want: "FILE:2: redis.url:",
		},
		{
			name: "postgres CA missing",
			body: "postgres:\n  dsn: postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem\n",
			want: "FILE:2: postgres.dsn:",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.body)
			writeKeyPair(t, filepath.Dir(path))
			var stdout, stderr bytes.Buffer
			err := check(path, tc.env.get, &stdout, &stderr)
			want := strings.ReplaceAll(tc.want, "FILE", path)
			if err == nil {
				t.Fatalf("check passed (%s), want an error %q", stdout.String(), want)
			}
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("check output:\n%s\nwant it to contain %q", stderr.String(), want)
			}
		})
	}
}

// TestTLSPathsRelativeToConfig: TLS files named in config.yaml are found
// beside it, whatever the working directory, as limits.path is.
func TestTLSPathsRelativeToConfig(t *testing.T) {
	path := writeConfig(t, "grpc:\n  tls:\n    cert_file: cert.pem\n    key_file: key.pem\n    client_ca_file: cert.pem\n"+
		"redis:\n  url: rediss://127.0.0.1:6380\n  tls:\n    ca_file: cert.pem\n    cert_file: cert.pem\n    key_file: key.pem\n")
	dir := filepath.Dir(path)
	writeKeyPair(t, dir)
	var stdout, stderr bytes.Buffer
	if err := check(path, env{}.get, &stdout, &stderr); err != nil {
		t.Fatalf("check: %v\n%s", err, stderr.String())
	}
	c, err := loadConfig(path, env{}.get)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for name, got := range map[string]string{
		"grpc.tls.cert_file": c.GRPC.TLS.CertFile, "grpc.tls.key_file": c.GRPC.TLS.KeyFile,
		"grpc.tls.client_ca_file": c.GRPC.TLS.ClientCAFile,
		"redis.tls.ca_file":       c.Redis.TLS.CAFile, "redis.tls.cert_file": c.Redis.TLS.CertFile,
		"redis.tls.key_file": c.Redis.TLS.KeyFile,
	} {
		want := cert
		if strings.HasSuffix(name, "key_file") {
			want = key
		}
		if got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}
