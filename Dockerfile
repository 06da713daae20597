# syntax=docker/dockerfile:1
# tee-kms: one image for every function (FUNCTION_TARGET selects it) and the sealing service.
#   docker build -t kind.local/tee-kms:dev .       (the kind quickstart: docs/deploy-knative.md)
#
# Base image: Node.js 24, an LTS line supported until April 2028 (Node 20 left support in April
# 2026; Node 22 leaves it in April 2027).
# >>> BASE IMAGE DIGEST: NOT RESOLVED IN THIS REPOSITORY <<<
# No digest is claimed here: resolve it where Docker Hub is reachable, check it, and pin it, e.g.
#   docker buildx imagetools inspect node:24-bookworm-slim --format '{{json .Manifest.Digest}}'
#   docker build --build-arg NODE_IMAGE=node:24-bookworm-slim@sha256:<that digest> -t <registry>/tee-kms:<tag> .
# (or replace the default below with that pinned reference). The tee-kms image itself is pinned by
# digest at deploy time: install.sh --tee tdx requires --image <registry>/tee-kms@sha256:<digest>.
ARG NODE_IMAGE=node:24-bookworm-slim

# ---- build: compile TypeScript to dist/ and bundle the lean host (scripts/build.mjs) ---------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.client.json ./
COPY client ./client
COPY functions ./functions
COPY shared ./shared
COPY sealer ./sealer
COPY cli ./cli
COPY scripts ./scripts
RUN npm run build

# ---- runtime: production dependencies and the built output only -------------------------------
FROM ${NODE_IMAGE} AS runtime
# The command's paths (node, dist/…) resolve against these two; the TDs' agent policy pins both
# (scripts/init-data.ts APP_DIR, IMAGE_PATH), so no pod spec can point them at a volume.
WORKDIR /app
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
# Knative sets PORT (8080) and terminates TLS before the pod (queue-proxy, inside the TD in the
# tdx overlay); the lean host listens on every interface in plain HTTP.
ENV KMS_BIND=0.0.0.0 \
    KMS_TLS=off \
    PORT=8080
EXPOSE 8080
# The official node image's "node" user; numeric, so runAsNonRoot can verify it.
USER 1000:1000
# One function per container: FUNCTION_TARGET=welcome|enrollUser|createPrimaryKey|... (functions/index.ts).
# The sealing service runs the same image with: node dist/sealer/main.js
CMD ["node", "dist/scripts/serve.js"]
