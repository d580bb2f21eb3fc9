# syntax=docker/dockerfile:1
#
# authz container image.
#
#   docker build -t authz .                  # the production image (the last stage, `authz`)
#   docker build -t authz-demo --target demo .   # + the compiled examples, for docker-compose.yml
#
# Base: node:24-bookworm-slim (Node 24 is the current LTS line). Chosen over
# gcr.io/distroless/nodejs24-debian12 because the image doubles as the operator's toolbox: the keys and
# dev-PKI CLIs run from it (`docker compose run --rm keys rotate`, a Kubernetes Job), and the compose
# init script needs /bin/sh. The attack surface is kept small anyway: production dependencies only,
# npm/corepack removed from the final image, non-root, read-only root filesystem. Pin the digest
# (`node:24-bookworm-slim@sha256:…`) in your CI for reproducible builds.
ARG NODE_IMAGE=node:24-bookworm-slim

# --- build: full dependencies, compile TypeScript to dist/ -------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# The SDK workspace (packages/sdk): the issuer imports the scope grammar and the thumbprint from it.
COPY packages/sdk/package.json ./packages/sdk/
# --ignore-scripts: `prepare` builds, and the sources are not here yet (the build is the next steps).
RUN --mount=type=cache,target=/root/.npm npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.base.json tsconfig.build.json tsconfig.examples.json ./
COPY packages/sdk/tsconfig.json ./packages/sdk/
COPY packages/sdk/src ./packages/sdk/src
COPY src ./src
# tsc -b tsconfig.build.json: the SDK, then the issuer (project references). The bins are executables.
RUN npm run build && chmod 0755 dist/bin/*.js

# --- build-examples: the demo services (only built for the `demo` target) -----------------------------
FROM build AS build-examples
COPY examples ./examples
RUN npx tsc -p tsconfig.examples.json

# --- prod-deps: production dependencies only, no install scripts ---------------------------------------
# One native addon is built on purpose: pkcs11js (optional: signing keys in a PKCS#11 token). The
# compiler it needs stays in this stage; the final image gets the built addon only.
FROM ${NODE_IMAGE} AS prod-deps
WORKDIR /app
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
COPY packages/sdk/package.json ./packages/sdk/
RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm rebuild pkcs11js

# --- runtime: what runs in production -------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
WORKDIR /app
# A fixed numeric UID/GID (10001) so Kubernetes `runAsNonRoot` can check it and volume ownership is
# predictable. The mount points exist and belong to that user, so an empty named volume mounted there
# inherits the owner and the keys CLI can write to it. The server itself never writes to the filesystem:
# the root filesystem can be (and should be) read-only.
RUN groupadd --system --gid 10001 authz \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin authz \
 && mkdir -p /etc/authz/tls /var/lib/authz/keys \
 && chown 10001:10001 /etc/authz /etc/authz/tls /var/lib/authz /var/lib/authz/keys \
 && chmod 0700 /var/lib/authz/keys \
 && rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack \
           /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack /usr/local/bin/yarn /usr/local/bin/yarnpkg /opt/yarn-*
# Code and dependencies belong to root: the service user can read them, not change them.
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# The operator commands, on PATH: `authz-keys rotate`, `authz status`, `authz-server` (the CMD runs the
# same file), `authz-pki`. No TypeScript, no npm: each starts in a fraction of a second.
RUN ln -s /app/dist/bin/server.js /usr/local/bin/authz-server \
 && ln -s /app/dist/bin/keys.js /usr/local/bin/authz-keys \
 && ln -s /app/dist/bin/authz.js /usr/local/bin/authz \
 && ln -s /app/dist/bin/pki.js /usr/local/bin/authz-pki
# node_modules/@authz/sdk links to the workspace: its manifest and built dist/.
COPY --from=build /src/packages/sdk/dist ./packages/sdk/dist
COPY packages/sdk/package.json ./packages/sdk/package.json
COPY package.json ./
# A sample only (the compose init copies it to the policy volume); production mounts its own policy.
COPY config/service-policy.json ./config/service-policy.json
# No signing key, certificate or policy is ever baked in: they come from mounted volumes.
#   /var/lib/authz/keys                  signing keys + manifest (read-only for the server)
#   /etc/authz/service-policy.json       the service policy
#   /etc/authz/tls/{tls.crt,tls.key,ca.crt}  server certificate chain, its key, the client CA
# (the file names of a kubernetes.io/tls Secret or a cert-manager Certificate).
# AUTHZ_DEV=false: missing material is a start-up error naming the variable, never a generated PKI.
# Both listeners bind 0.0.0.0: in a container, probes and Prometheus reach the ops listener from
# outside the container's loopback (keep 9464 off the public network: see deploy/kubernetes).
ENV NODE_ENV=production \
    AUTHZ_DEV=false \
    AUTHZ_HOST=0.0.0.0 \
    AUTHZ_PORT=8443 \
    AUTHZ_OPS_HOST=0.0.0.0 \
    AUTHZ_OPS_PORT=9464 \
    AUTHZ_KEYS_DIR=/var/lib/authz/keys \
    AUTHZ_POLICY=/etc/authz/service-policy.json \
    AUTHZ_TLS_CERT=/etc/authz/tls/tls.crt \
    AUTHZ_TLS_KEY=/etc/authz/tls/tls.key \
    AUTHZ_CLIENT_CA=/etc/authz/tls/ca.crt
USER 10001:10001
EXPOSE 8443 9464
# No curl in a slim image: Node's own fetch probes the ops listener.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.AUTHZ_OPS_PORT||9464)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Exec form: node is PID 1 and receives SIGTERM itself; the server handles SIGTERM/SIGINT (stop
# accepting, drain in-flight requests, exit 0) and spawns no children, so no init process is needed.
STOPSIGNAL SIGTERM
CMD ["node", "dist/bin/server.js"]

# --- demo: the production image + the compiled examples (docker-compose.yml's demo services) -----------
FROM runtime AS demo
COPY --from=build-examples /src/dist-examples ./dist-examples
COPY examples/inventory-policy.json ./examples/inventory-policy.json
# The demo services have no ops listener; docker-compose.yml gives each its own check.
HEALTHCHECK NONE
CMD ["node", "dist-examples/examples/compose/order-service.js"]

# --- authz: the default target (last stage) is the production image ------------------------------------
FROM runtime AS authz
