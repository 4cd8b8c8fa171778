# One image for both roles of vmta: `vmta operator` (the Kubernetes operator) and `vmta mta`
# (the relay in each pool pod). The sources are TypeScript run directly by Node 24's type
# stripping, so there is no compile step: the build stage installs production dependencies
# only and checks that the command starts; the runtime stage copies that tree and runs it as
# a fixed non-root UID. test/image/dockerfile.test.ts replays the build stage's COPY and RUN
# steps on a clean copy of the repository, so keep RUN commands relative to WORKDIR and limited
# to npm and node (the replay refuses anything else rather than run it on the test machine).
#
# The base tag pins the same Node version as the `node` devDependency in package.json (the
# test checks they agree). Build: docker build -t vmta:dev .

ARG NODE_IMAGE=node:24.21.0-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=dev leaves out TypeScript, @types and the `node` package (the base image has Node 24).
# --ignore-scripts: no production dependency needs an install script, and none runs unreviewed.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund
COPY bin/ bin/
COPY cli/ cli/
COPY mta/ mta/
COPY operator/ operator/
RUN node bin/vmta.js --help

FROM ${NODE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="vmta" \
      org.opencontainers.image.description="Kubernetes operator and TypeScript relay for fleets of virtual MTAs (PowerMTA-style outbound SMTP)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/vmta-dev/vmta-operator" \
      org.opencontainers.image.url="https://vmta.dev" \
      org.opencontainers.image.vendor="vmta.dev" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules/ node_modules/
COPY --from=build /app/bin/ bin/
COPY --from=build /app/cli/ cli/
COPY --from=build /app/mta/ mta/
COPY --from=build /app/operator/ operator/
# 65532 is the conventional "nonroot" UID of distroless images; it has no home and no shell login.
# Files stay owned by root and read-only for it: the chart also sets readOnlyRootFilesystem.
USER 65532:65532
# 8025: the relay's admin/metrics port; 8080: the operator's health/metrics port.
EXPOSE 8025 8080
ENTRYPOINT ["node", "/app/bin/vmta.js"]
CMD ["--help"]
