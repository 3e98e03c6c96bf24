# realtimed: `docker build -t realtimed .`, then
#   docker run --rm -e DATABASE_URL=postgres://owner@db/app realtimed migrate
#   docker run -p 4000:4000 -e DATABASE_URL=postgres://realtimed@db/app -e REALTIMED_JWT_SECRET=... realtimed
# Configuration is by environment (realtimed start --help lists every variable).

# Build: TypeScript and the inspector bundle. Scripts are skipped so `prepare`
# does not build before the sources are in.
FROM node:22-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/build-inspector.mjs scripts/
COPY src src
RUN npm run build

# Production dependencies only: no compiler, no embedded PostgreSQL binaries.
FROM node:22-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund && npm cache clean --force

FROM node:22-bookworm-slim
ENV NODE_ENV=production REALTIMED_HOST=0.0.0.0 REALTIMED_PORT=4000
WORKDIR /app
COPY --from=deps /app/node_modules node_modules
COPY package.json ./
COPY bin bin
COPY sql/committed sql/committed
COPY sql/demo.sql sql/demo.sql
COPY --from=build /src/dist dist
USER node
EXPOSE 4000
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.REALTIMED_PORT || 4000) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "bin/realtimed.js"]
CMD ["start"]
