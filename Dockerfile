# syntax=docker/dockerfile:1
# tee-kms: one image for every function (FUNCTION_TARGET selects it) and the sealing service.
#   docker build -t tee-kms:dev .
# Pin the base image by digest for production builds:
#   docker build --build-arg NODE_IMAGE=node:20-bookworm-slim@sha256:<digest> -t <registry>/tee-kms:<tag> .
ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: compile TypeScript to dist/ and bundle the lean host (scripts/build.mjs) ---------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY functions ./functions
COPY shared ./shared
COPY sealer ./sealer
COPY scripts ./scripts
RUN npm run build

# ---- runtime: production dependencies and the built output only -------------------------------
FROM ${NODE_IMAGE} AS runtime
WORKDIR /app
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
