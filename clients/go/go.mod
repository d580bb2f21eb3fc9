module authz.internal/clients/go

go 1.22

// Go 1.22 or later: the only release the kit is built and tested with (Debian bookworm-backports'
// golang-1.22-go); bookworm's own Go 1.19 cannot build it (log/slog, crypto/ecdh, min/max).
//
// These are the versions CI builds and tests against: the Debian bookworm (and bookworm-backports)
// packages of the same libraries. scripts/go.sh checks that every line below matches the installed
// Debian package, so a bump here is a bump in CI too. With a network, `go mod tidy` adds go.sum and the
// indirect requirements; no newer API than these versions is used.
require (
	github.com/gin-gonic/gin v1.8.1
	github.com/golang-jwt/jwt/v5 v5.2.2
	github.com/labstack/echo/v4 v4.2.1
	golang.org/x/sync v0.1.0
	google.golang.org/grpc v1.33.3
)
