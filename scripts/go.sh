#!/usr/bin/env bash
# The Go kit (clients/go) and its example (examples/go), built offline against Debian's Go packages in
# GOPATH mode — there is no Go module proxy here.
#
#   scripts/go.sh install   install the Debian packages that are missing (bookworm + bookworm-backports)
#   scripts/go.sh unit      check go.mod against Debian, go vet, and the unit tests: no node, no build
#                           (a Go stand-in for authz); ends with "go: N passed, M failed"
#   scripts/go.sh test      the unit tests, then npm run build and the live tests (go test -tags live
#                           -run Live: the kit against the real authz, and the Go demo); ends with one
#                           combined "go: N passed, M failed"
#   scripts/go.sh demo      npm run build, then the Go demo (examples/go)
#   scripts/go.sh env       print the environment to run go by hand
#
# A missing toolchain or library is a failure, never a skip.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

GO_VERSION=1.22
GO="${GO:-/usr/lib/go-${GO_VERSION}/bin/go}"
# Debian package -> Go import path of the library, and the version go.mod must require.
PACKAGES_MAIN=(golang-github-gin-gonic-gin-dev golang-github-labstack-echo-dev golang-google-grpc-dev golang-golang-x-sync-dev)
PACKAGES_BACKPORTS=("golang-${GO_VERSION}-go" golang-github-golang-jwt-jwt-v5-dev)
declare -A MODULE_OF=(
  [golang-github-gin-gonic-gin-dev]=github.com/gin-gonic/gin
  [golang-github-labstack-echo-dev]=github.com/labstack/echo/v4
  [golang-google-grpc-dev]=google.golang.org/grpc
  [golang-golang-x-sync-dev]=golang.org/x/sync
  [golang-github-golang-jwt-jwt-v5-dev]=github.com/golang-jwt/jwt/v5
)

missing() { # the packages of "$@" that dpkg does not have installed
  local p
  for p in "$@"; do
    dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || echo "$p"
  done
}

cmd_install() {
  local need_main need_bp
  need_main=$(missing "${PACKAGES_MAIN[@]}")
  need_bp=$(missing "${PACKAGES_BACKPORTS[@]}")
  if [ -z "$need_main$need_bp" ]; then
    echo "go: Debian packages already installed"
    return 0
  fi
  if [ -n "$need_bp" ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "go: adding bookworm-backports to the apt sources"
    echo 'deb http://deb.debian.org/debian bookworm-backports main' >/etc/apt/sources.list.d/backports.list || return 1
  fi
  echo "go: installing $need_main $need_bp"
  apt-get update -qq || return 1
  # shellcheck disable=SC2086
  { [ -z "$need_bp" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports $need_bp; } || return 1
  # shellcheck disable=SC2086
  { [ -z "$need_main" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_main; } || return 1
}

# A temp GOPATH whose src/ links the kit and the example at their import paths; the libraries come
# from /usr/share/gocode.
setup_gopath() {
  GOPATH_TMP="$(mktemp -d /tmp/authz-gopath.XXXXXX)"
  mkdir -p "$GOPATH_TMP/src/authz.internal/clients" "$GOPATH_TMP/src/authz.internal/examples" "$GOPATH_TMP/src/authz.internal/bench"
  ln -s "$ROOT/clients/go" "$GOPATH_TMP/src/authz.internal/clients/go"
  ln -s "$ROOT/examples/go" "$GOPATH_TMP/src/authz.internal/examples/go"
  ln -s "$ROOT/bench/revoke" "$GOPATH_TMP/src/authz.internal/bench/revoke"
  export GO111MODULE=off GOPATH="$GOPATH_TMP:/usr/share/gocode" GOPROXY=off GOFLAGS= GOTOOLCHAIN=local CGO_ENABLED=0
  export GOCACHE="${GOCACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/go-build}"
  export AUTHZ_ROOT="$ROOT"
  trap 'rm -rf "$GOPATH_TMP"' EXIT
}

# Import paths of the packages under a directory (GOPATH mode does not follow symlinks with "...").
packages_of() { # dir prefix
  (cd "$1" && find . -name '*.go' -printf '%h\n' | sort -u | sed -e "s#^\.#$2#")
}

check_toolchain() {
  local need
  need=$(missing "${PACKAGES_MAIN[@]}" "${PACKAGES_BACKPORTS[@]}")
  if [ -n "$need" ] || [ ! -x "$GO" ]; then
    echo "go: missing Debian packages: ${need:-$GO} (as root: bash scripts/go.sh install)" >&2
    return 1
  fi
}

# go.mod requires exactly the versions Debian installed (5.2.2-1~bpo12+1 -> v5.2.2).
check_gomod() {
  local ok=0 pkg mod want have
  for pkg in "${!MODULE_OF[@]}"; do
    mod=${MODULE_OF[$pkg]}
    have=$(dpkg-query -W -f '${Version}' "$pkg" | sed -E 's/^[0-9]+://; s/[-+~].*$//')
    want=$(awk -v m="$mod" '$1 == m { print $2 }' "$ROOT/clients/go/go.mod")
    if [ "v$have" != "$want" ]; then
      echo "go: clients/go/go.mod requires $mod ${want:-(nothing)}, Debian has $pkg $have" >&2
      ok=1
    fi
  done
  [ "$ok" -eq 0 ] && echo "go: go.mod matches the Debian library versions"
  return $ok
}

# Runs go test on the kit and the example with extra flags, adds its results to PASSED and FAILED.
PASSED=0
FAILED=0
run_tests() { # label, go test flags...
  local label="$1" log rc pass fail
  shift
  log="$(mktemp)"
  # shellcheck disable=SC2086
  (cd "$GOPATH_TMP/src/authz.internal/clients/go" && "$GO" test -count=1 -timeout 300s -v "$@" ${GOTESTFLAGS:-} $PKGS) 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  pass=$(grep -cE '^\s*--- PASS' "$log")
  fail=$(grep -cE '^\s*--- FAIL' "$log")
  if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi # a build failure or a panic is a failure too
  rm -f "$log"
  echo "go ($label): ${pass} passed, ${fail} failed"
  PASSED=$((PASSED + pass))
  FAILED=$((FAILED + fail))
}

# go.mod against Debian, gofmt, and go vet of every file (the live tests' too).
check_and_vet() {
  check_gomod || FAILED=$((FAILED + 1))
  local unformatted
  unformatted="$("$(dirname "$GO")/gofmt" -l "$ROOT/clients/go" "$ROOT/examples/go" "$ROOT/bench/revoke")"
  if [ -n "$unformatted" ]; then
    echo "go: not gofmt-formatted (run gofmt -w): $unformatted"
    FAILED=$((FAILED + 1))
  fi
  local tags
  for tags in "" live before; do # before: bench/revoke's callers as older kits had them
    # shellcheck disable=SC2086
    (cd "$GOPATH_TMP/src/authz.internal/clients/go" && "$GO" vet -tags "$tags" $PKGS) || { echo "go: go vet -tags '$tags' failed"; FAILED=$((FAILED + 1)); }
  done
}

start_go() {
  check_toolchain || { echo "go: 0 passed, 1 failed"; return 1; }
  echo "go: $("$GO" version)"
  setup_gopath
  PKGS="$(packages_of "$ROOT/clients/go" authz.internal/clients/go) $(packages_of "$ROOT/examples/go" authz.internal/examples/go) authz.internal/bench/revoke"
}

cmd_unit() {
  start_go || return 1
  check_and_vet
  run_tests unit
  echo "go: ${PASSED} passed, ${FAILED} failed"
  [ "$FAILED" -eq 0 ]
}

cmd_test() {
  start_go || return 1
  check_and_vet
  run_tests unit
  if (cd "$ROOT" && npm run build --silent); then
    run_tests live -tags live -run Live
  else
    echo "go: npm run build failed"
    FAILED=$((FAILED + 1))
  fi
  echo "go: ${PASSED} passed, ${FAILED} failed"
  [ "$FAILED" -eq 0 ]
}

cmd_demo() {
  check_toolchain || return 1
  (cd "$ROOT" && npm run build --silent) || return 1
  setup_gopath
  local bin
  bin="$(mktemp -d /tmp/authz-go-demo.XXXXXX)"
  (cd "$GOPATH_TMP/src/authz.internal/examples/go" && "$GO" build -o "$bin/demo" ./cmd/demo) || return 1
  "$bin/demo"
  local rc=$?
  rm -rf "$bin"
  return $rc
}

cmd_env() {
  setup_gopath
  trap - EXIT
  echo "export GO111MODULE=off GOPATH=$GOPATH GOPROXY=off GOFLAGS= GOTOOLCHAIN=local CGO_ENABLED=0 AUTHZ_ROOT=$ROOT"
  echo "cd $GOPATH_TMP/src/authz.internal/clients/go && $GO test .   # the unit tests; -tags live -run Live: against authz (npm run build first)"
}

case "${1:-}" in
  install) cmd_install ;;
  unit) cmd_unit ;;
  test) cmd_test ;;
  demo) cmd_demo ;;
  env) cmd_env ;;
  *) echo "usage: scripts/go.sh install|unit|test|demo|env" >&2; exit 2 ;;
esac
