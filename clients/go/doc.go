// Package authz is the Go kit of the authz authorization center: the calling side ([TokenSource],
// [NewTransport], any [TokenProvider]), the receiving side ([Verifier], [CalleePolicy], [Guard],
// [Middleware]) of a service-to-service call, and the TLS material both take from files and follow as
// it is renewed ([TLSFiles]). A token is bound to the certificate it was fetched with: the helpers send
// it only over a connection of that certificate, and retry a 401 once with a fresh token (a revoked
// signing key). Packages ginauth and grpcauth plug the same [Guard]
// into Gin and gRPC; another framework's adapter is a few lines: build a [Request], [Guard.Check] it,
// write the answer ([WriteDenial]).
//
// A caller proves who it is with its mTLS client certificate; authz puts that certificate's identity
// (its Subject CN, or its SPIFFE ID) in the token's sub, and binds the token to the certificate
// (cnf.x5t#S256). A receiving service verifies the token offline with the keys authz publishes, checks
// that it came over the same certificate, and decides service:action locally from its own policy file.
// Every denial is a bare 401 or 403 with a reason from one vocabulary ([DenialReasons], the TypeScript
// SDK's too), logged once and counted ([OnDecision], [CalleeCounters]); tokens never reach a log.
//
// The kit behaves as the TypeScript SDK @authz/sdk: both pass the vectors of the repository's
// conformance/ directory.
package authz
