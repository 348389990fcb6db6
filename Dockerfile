# One Blackboard server process. docker-compose.yml runs two of them behind a load
# balancer; configuration comes from the environment (README, "Configuration").
# The dashboard's assets (web/ui/ -> web/static/, as `make ui` builds them): Node is
# needed to build them only, not in the image.
FROM node:20-slim AS ui
WORKDIR /src/web/ui
COPY web/ui/package.json web/ui/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ui/ ./
RUN node build.mjs

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --system --create-home --home-dir /home/blackboard blackboard

COPY pyproject.toml README.md ./
COPY schemas schemas
COPY persistence persistence
COPY sync sync
COPY web web
COPY --from=ui /src/web/static web/static
RUN pip install . && mkdir -p /data && chown blackboard /data

USER blackboard
ENV BLACKBOARD_HOST=0.0.0.0 \
    BLACKBOARD_PORT=8000 \
    BLACKBOARD_DATA_DIR=/data
EXPOSE 8000

# Migrations first (several instances may start at once: the migrator takes a Postgres
# advisory lock), then the server; exec so SIGTERM reaches it and it flushes everything.
CMD ["sh", "-c", "blackboard migrate && exec blackboard serve --host 0.0.0.0"]
