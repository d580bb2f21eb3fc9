package snippets

import (
	"crypto/tls"
	"crypto/x509"
	"os"

	authz "authz.internal/clients/go"
)

func loadPolicyFromConfigServer() (*authz.CalleePolicy, *authz.CalleeCounters, error) {
	// Mutual TLS to the configuration server: its CA, and this service's own certificate.
	cert, err := tls.LoadX509KeyPair("inventory-service.pem", "inventory-service-key.pem")
	if err != nil {
		return nil, nil, err
	}
	ca, err := os.ReadFile("config-ca.pem")
	if err != nil {
		return nil, nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)

	counters := &authz.CalleeCounters{} // serve counters.WritePrometheus on /metrics
	policy, err := authz.LoadCalleePolicyWith("https://config.internal/policies/inventory-service.json",
		authz.WithPolicyTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}),
		authz.WithBundledPolicy("inventory-policy.json"), // in force when the server cannot answer at start
		authz.WithPolicyCounters(counters))
	return policy, counters, err
}
