package testissuer

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// PEMOf is a certificate's chain and private key as PEM files hold them.
func PEMOf(t testing.TB, c tls.Certificate) (certPEM, keyPEM []byte) {
	t.Helper()
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// CAPEM is the PKI's CA certificate, PEM.
func (p *PKI) CAPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Cert.Raw})
}

// CAPEM is the fake's CA (its server's and its callers' certificates chain to it), PEM.
func (f *Fake) CAPEM() []byte { return f.pki.CAPEM() }

// Issue makes a new client certificate of the fake's CA with CN name (a renewal: another key, another
// certificate).
func (f *Fake) Issue(name string) tls.Certificate { return f.pki.Issue(name, false) }

// TLSDir is a Kubernetes Secret volume as the kubelet writes it: every file in a new timestamped
// directory, then the ..data symlink the visible names point through swapped in one rename.
type TLSDir struct {
	Dir                       string
	CertFile, KeyFile, CAFile string
	t                         testing.TB
	generation                atomic.Int64
}

// NewTLSDir makes the volume in a temp dir with a first certificate and CA bundle.
func NewTLSDir(t testing.TB, cert tls.Certificate, caPEM []byte) *TLSDir {
	d := &TLSDir{Dir: t.TempDir(), t: t}
	d.Write(cert, caPEM)
	for _, name := range []string{"tls.crt", "tls.key", "ca.crt"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(d.Dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	d.CertFile, d.KeyFile, d.CAFile = filepath.Join(d.Dir, "tls.crt"), filepath.Join(d.Dir, "tls.key"), filepath.Join(d.Dir, "ca.crt")
	return d
}

// Write puts a new certificate, key and CA bundle in place, as the kubelet does.
func (d *TLSDir) Write(cert tls.Certificate, caPEM []byte) {
	certPEM, keyPEM := PEMOf(d.t, cert)
	stamp := fmt.Sprintf("..2026_01_01_00_00_00.%d", d.generation.Add(1))
	must := func(err error) {
		if err != nil {
			d.t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(d.Dir, stamp), 0o755))
	must(os.WriteFile(filepath.Join(d.Dir, stamp, "tls.crt"), certPEM, 0o644))
	must(os.WriteFile(filepath.Join(d.Dir, stamp, "tls.key"), keyPEM, 0o600))
	must(os.WriteFile(filepath.Join(d.Dir, stamp, "ca.crt"), caPEM, 0o644))
	old, _ := os.Readlink(filepath.Join(d.Dir, "..data"))
	must(os.Symlink(stamp, filepath.Join(d.Dir, "..data_tmp")))
	must(os.Rename(filepath.Join(d.Dir, "..data_tmp"), filepath.Join(d.Dir, "..data")))
	if old != "" {
		must(os.RemoveAll(filepath.Join(d.Dir, old)))
	}
}
