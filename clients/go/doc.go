// Package authz is the Go kit of the authz authorization center: the calling side ([TokenSource],
// [NewTransport]) and the receiving side ([Verifier], [CalleePolicy], [Middleware]) of a
// service-to-service call. Packages ginauth and grpcauth plug the same rules into Gin and gRPC.
//
// A caller proves who it is with its mTLS client certificate; authz puts that certificate's Subject CN
// in the token's sub, and binds the token to the certificate (cnf.x5t#S256). A receiving service
// verifies the token offline with the keys authz publishes, checks that it came over the same
// certificate, and decides service:action locally from its own policy file. Every denial is a bare
// 401 or 403; tokens never reach a log.
package authz
