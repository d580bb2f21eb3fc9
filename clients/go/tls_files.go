package authz

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// DefaultTLSPollInterval is how often TLSFiles re-reads its files (the TypeScript SDK's
// TLS_FILES_POLL_MS, and the callee policy's interval).
const DefaultTLSPollInterval = 2 * time.Second

// maxTLSFileBytes is the largest certificate, key or bundle file read.
const maxTLSFileBytes = 1 << 20

// TLSMaterial is one set of a service's TLS material: what a connection presents and trusts. A token
// is bound to Certificate's leaf: the kit's helpers send a token only over a connection opened with the
// material it was fetched with.
type TLSMaterial struct {
	// Certificate is the service's certificate chain and private key (Leaf set).
	Certificate tls.Certificate
	// CAs is the CA bundle: the roots of authz's and the callees' server certificates for a caller,
	// of the callers' certificates for a server.
	CAs *x509.CertPool
	// Thumbprint is the base64url SHA-256 of the leaf's DER: cnf.x5t#S256 of the tokens fetched with it.
	Thumbprint string

	// config is the client configuration a TokenSource given a fixed tls.Config uses as it is.
	config *tls.Config
}

// ClientConfig is a TLS client configuration presenting this material, trusting its CAs (TLS 1.2 at
// least). A TokenSource with a fixed TLS config returns a clone of that config.
func (m *TLSMaterial) ClientConfig() *tls.Config {
	if m.config != nil {
		return m.config.Clone()
	}
	return &tls.Config{Certificates: []tls.Certificate{m.Certificate}, RootCAs: m.CAs, MinVersion: tls.VersionTLS12}
}

// NotAfter is the end of the leaf certificate's validity (zero when unknown).
func (m *TLSMaterial) NotAfter() time.Time {
	if m.Certificate.Leaf == nil {
		return time.Time{}
	}
	return m.Certificate.Leaf.NotAfter
}

// materialOf makes a TLSMaterial of a fixed tls.Config (its first certificate, if it has one).
func materialOf(cfg *tls.Config) *TLSMaterial {
	m := &TLSMaterial{CAs: cfg.RootCAs, config: cfg.Clone()}
	if len(cfg.Certificates) > 0 {
		m.Certificate = cfg.Certificates[0]
		if leaf := m.Certificate.Leaf; leaf != nil {
			m.Thumbprint = CertificateThumbprint(leaf)
		} else if len(m.Certificate.Certificate) > 0 {
			if leaf, err := x509.ParseCertificate(m.Certificate.Certificate[0]); err == nil {
				m.Thumbprint = CertificateThumbprint(leaf)
			}
		}
	}
	return m
}

// TLSReloadEvent is the outcome of a reload that found the files changed.
type TLSReloadEvent struct {
	// Err is nil when a new set is in force; else why the changed files were refused (the set in force
	// stays).
	Err error
	// Thumbprint and NotAfter are those of the certificate in force now.
	Thumbprint string
	NotAfter   time.Time
}

// TLSFiles is a service's certificate, key and CA bundle read from files and re-read when they change,
// so that certificates renewed on disk (cert-manager, spiffe-helper, a kubelet ..data swap) take effect
// without a restart. The files are polled (re-read and compared), so a symlink swapped under a path is
// followed and a file replaced by rename is seen. A new set is put in force only when it is whole: the
// key is the certificate's, the bundle holds certificates. A read that straddles an update (the new
// certificate, the old key) is refused, read again at the next poll, and reported (logged once, and to
// the reload hook) only when the same refused content is read twice in a row. Only regular files of at
// most 1 MiB are read. Share one between a service's TokenSource (TokenSourceConfig.Files) and its
// server (ServerConfig). Safe for concurrent use; Close stops the polling.
type TLSFiles struct {
	certFile, keyFile, caFile string
	interval                  time.Duration
	onReload                  func(TLSReloadEvent)
	logger                    *slog.Logger

	mu      sync.Mutex
	current *TLSMaterial
	// inForce: the bytes of current; seen: the bytes last put in force or reported refused;
	// refusedOnce: bytes refused once, not reported yet.
	inForce, seen, refusedOnce *tlsFileSet
	refused                    error                       // why seen was refused
	failing                    bool                        // the files on disk are refused (reported)
	servers                    map[*tls.Config]*tls.Config // each ServerConfig's base → its config for the material in force

	stop     chan struct{}
	stopOnce sync.Once
}

type tlsFileSet struct{ cert, key, ca []byte }

func (a *tlsFileSet) equal(b *tlsFileSet) bool {
	return b != nil && bytes.Equal(a.cert, b.cert) && bytes.Equal(a.key, b.key) && bytes.Equal(a.ca, b.ca)
}

// TLSFilesOption configures LoadTLSFiles.
type TLSFilesOption func(*TLSFiles)

// WithTLSPollInterval sets how often the files are re-read (default 2 s; 0 reads them once, leaving
// Reload).
func WithTLSPollInterval(d time.Duration) TLSFilesOption { return func(f *TLSFiles) { f.interval = d } }

// WithTLSReloadHook is told about every change of the files' content: a new set in force, or a set
// refused (once per distinct bad content). It must not block.
func WithTLSReloadHook(h func(TLSReloadEvent)) TLSFilesOption {
	return func(f *TLSFiles) { f.onReload = h }
}

// WithTLSLogger sets where renewals and refused sets are logged, one line each (default
// slog.Default()).
func WithTLSLogger(l *slog.Logger) TLSFilesOption { return func(f *TLSFiles) { f.logger = l } }

// LoadTLSFiles reads a certificate (PEM, the leaf first, then any intermediates), its private key (PEM,
// unencrypted) and a CA bundle (PEM), and polls them from then on. It fails when they do not make a
// usable set, naming the file and why (never what a key holds).
func LoadTLSFiles(certFile, keyFile, caFile string, opts ...TLSFilesOption) (*TLSFiles, error) {
	f := &TLSFiles{certFile: certFile, keyFile: keyFile, caFile: caFile, interval: DefaultTLSPollInterval, stop: make(chan struct{}), servers: map[*tls.Config]*tls.Config{}}
	for _, o := range opts {
		o(f)
	}
	if f.logger == nil {
		f.logger = slog.Default()
	}
	set, err := f.read()
	if err != nil {
		return nil, err
	}
	if f.current, err = f.parse(set); err != nil {
		return nil, err
	}
	f.inForce, f.seen = set, set
	if f.interval > 0 {
		go f.poll()
	}
	return f, nil
}

// Material is the set in force.
func (f *TLSFiles) Material() *TLSMaterial {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.current
}

// ServerConfig is a TLS server configuration that presents the certificate in force and requires and
// verifies client certificates against the bundle in force, for every connection from the moment a
// renewal is in force (connections already open keep theirs). base gives the rest (MinVersion, cipher
// suites, NextProtos; nil: TLS 1.2 at least, ALPN h2 and http/1.1); its certificates, client CAs and
// client authentication are the files'. Use it for net/http (ListenAndServeTLS("", "")) and gRPC
// (credentials.NewTLS) servers alike.
func (f *TLSFiles) ServerConfig(base *tls.Config) *tls.Config {
	if base == nil {
		base = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	base = base.Clone()
	return &tls.Config{
		MinVersion: base.MinVersion,
		NextProtos: base.NextProtos,
		// The handshake's configuration is chosen when the ClientHello arrives: the set in force then.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return f.serverConfig(base), nil },
	}
}

// serverConfig is base with the material in force, made once per set.
func (f *TLSFiles) serverConfig(base *tls.Config) *tls.Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cfg := f.servers[base]; cfg != nil && len(cfg.Certificates) > 0 && cfg.Certificates[0].Leaf == f.current.Certificate.Leaf {
		return cfg
	}
	cfg := base.Clone()
	cfg.Certificates = []tls.Certificate{f.current.Certificate}
	cfg.ClientCAs = f.current.CAs
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.GetConfigForClient, cfg.GetCertificate = nil, nil
	// Session tickets of this set only: Go restores a resumed session's verified chains without checking
	// them against the ClientCAs in force, and seals tickets with the outer configuration's keys unless
	// this one has its own. A session of an older bundle is not resumed: its client is verified anew.
	var key [32]byte
	if _, err := rand.Read(key[:]); err == nil {
		cfg.SetSessionTicketKeys([][32]byte{key})
	} else {
		cfg.SessionTicketsDisabled = true
	}
	if len(cfg.NextProtos) == 0 {
		// net/http adds these to its own clone of the outer configuration, which this one is not.
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	f.servers[base] = cfg
	return cfg
}

// Reload reads the files now (on SIGHUP, say). It returns nil when the set in force is the files' (a
// new one put in force, or no change); else why the changed files were refused.
func (f *TLSFiles) Reload() error {
	set, err := f.read()
	f.mu.Lock()
	if err != nil {
		bad := &tlsFileSet{ca: []byte(err.Error())}
		event, report := f.refuseLocked(bad, err)
		f.mu.Unlock()
		f.tell(event, report)
		return err
	}
	switch {
	case set.equal(f.inForce):
		f.seen, f.refusedOnce, f.failing = f.inForce, nil, false // unchanged, or back to the set in force: nothing to report
		f.mu.Unlock()
		return nil
	case set.equal(f.seen):
		err := f.refused // refused and reported already
		f.mu.Unlock()
		return err
	}
	material, err := f.parse(set)
	if err != nil {
		event, report := f.refuseLocked(set, err)
		f.mu.Unlock()
		f.tell(event, report)
		return err
	}
	f.current, f.inForce, f.seen, f.refusedOnce, f.failing = material, set, set, nil, false
	f.mu.Unlock()
	f.logger.Info("authz: TLS files renewed; new connections and tokens use the new certificate", "event", "tls_files_renewed", "cert", f.certFile, "x5t", material.Thumbprint, "not_after", material.NotAfter())
	f.tell(TLSReloadEvent{Thumbprint: material.Thumbprint, NotAfter: material.NotAfter()}, true)
	return nil
}

// refuseLocked records a refused set: reported the second time in a row it is read (a straddled
// update is not a fault), and once.
func (f *TLSFiles) refuseLocked(set *tlsFileSet, err error) (TLSReloadEvent, bool) {
	event := TLSReloadEvent{Err: err, Thumbprint: f.current.Thumbprint, NotAfter: f.current.NotAfter()}
	if !set.equal(f.refusedOnce) {
		f.refusedOnce = set
		return event, false
	}
	f.seen, f.refusedOnce, f.refused, f.failing = set, nil, err, true
	f.logger.Error("authz: TLS files refused; the certificate in force stays", "event", "tls_files_refused", "error", err.Error(), "x5t", event.Thumbprint, "not_after", event.NotAfter)
	return event, true
}

func (f *TLSFiles) tell(event TLSReloadEvent, report bool) {
	if report && f.onReload != nil {
		f.onReload(event)
	}
}

// WritePrometheus writes two gauges in the Prometheus text format, for a service's own /metrics (the
// TypeScript SDK's names): authz_tls_certificate_expiry_timestamp_seconds (the certificate in force ends
// then: alert well before it, a renewal that never comes ends there) and authz_tls_files_reload_failing
// (1 while the files on disk are refused), labelled with the certificate file.
func (f *TLSFiles) WritePrometheus(w io.Writer) error {
	f.mu.Lock()
	notAfter, failing := f.current.NotAfter(), 0
	if f.failing {
		failing = 1
	}
	f.mu.Unlock()
	label := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(f.certFile)
	_, err := fmt.Fprintf(w, `# HELP authz_tls_certificate_expiry_timestamp_seconds End of validity of the certificate in force, from the TLS files.
# TYPE authz_tls_certificate_expiry_timestamp_seconds gauge
authz_tls_certificate_expiry_timestamp_seconds{cert="%s"} %d
# HELP authz_tls_files_reload_failing 1 while the TLS files on disk are refused; the certificate in force stays.
# TYPE authz_tls_files_reload_failing gauge
authz_tls_files_reload_failing{cert="%s"} %d
`, label, notAfter.Unix(), label, failing)
	return err
}

// Close stops the polling; the material in force stays readable. It returns nil and may be called more
// than once.
func (f *TLSFiles) Close() error {
	f.stopOnce.Do(func() { close(f.stop) })
	return nil
}

func (f *TLSFiles) poll() {
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
			_ = f.Reload()
		}
	}
}

func (f *TLSFiles) read() (*tlsFileSet, error) {
	var set tlsFileSet
	for _, r := range []struct {
		path string
		into *[]byte
	}{{f.certFile, &set.cert}, {f.keyFile, &set.key}, {f.caFile, &set.ca}} {
		data, err := readRegularFile(r.path, maxTLSFileBytes)
		if err != nil {
			return nil, fmt.Errorf("authz: TLS files: %w", err)
		}
		*r.into = data
	}
	return &set, nil
}

func (f *TLSFiles) parse(set *tlsFileSet) (*TLSMaterial, error) {
	invalid := func(path, why string) error { return fmt.Errorf("authz: TLS files: %s: %s", path, why) }
	cert, err := tls.X509KeyPair(set.cert, set.key)
	if err != nil {
		// Which file is at fault, without repeating what crypto/tls read in it.
		if _, certErr := x509CertificatesOf(set.cert); certErr != nil {
			return nil, invalid(f.certFile, "not a PEM certificate")
		}
		return nil, invalid(f.keyFile, "not an unencrypted PEM private key of "+f.certFile)
	}
	if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
		return nil, invalid(f.certFile, "not a PEM certificate")
	}
	cas, err := x509CertificatesOf(set.ca)
	if err != nil {
		return nil, invalid(f.caFile, err.Error())
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	return &TLSMaterial{Certificate: cert, CAs: pool, Thumbprint: CertificateThumbprint(cert.Leaf)}, nil
}

// x509CertificatesOf parses every CERTIFICATE block of a PEM bundle: at least one, each one valid.
func x509CertificatesOf(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, errors.New("holds a certificate that does not parse")
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("holds no PEM certificate")
	}
	return out, nil
}
