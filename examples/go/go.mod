module authz.internal/examples/go

go 1.22

require (
	authz.internal/clients/go v0.0.0
	github.com/gin-gonic/gin v1.8.1
	github.com/labstack/echo/v4 v4.2.1
	google.golang.org/grpc v1.33.3
)

replace authz.internal/clients/go => ../../clients/go
