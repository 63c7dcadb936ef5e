# One boxoffice node: the base install only (no embedded servers, no load tests, no tests), as a non-root user.
# docker-compose.yml runs three of these behind HAProxy against PostgreSQL 16, Redis 7 and Apache Kafka;
# deploy/ runs them on Kubernetes against managed services. Every setting comes from the environment
# (see CONTRACT.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so a code change does not reinstall them: the base dependency list from pyproject.toml
# alone (the extras are for development machines), then the code. (README.md* matches nothing without one.)
COPY pyproject.toml README.md* ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# the packages a node runs, nothing else: .dockerignore keeps tests/, loadtests/ and the rest out of the context
COPY server ./server
COPY handlers ./handlers
COPY realtime ./realtime
COPY storage ./storage
COPY jobs ./jobs
# pyproject names README.md as the long description; a checkout without one must still build
RUN { [ -f README.md ] || echo "boxoffice" > README.md; } \
    && pip install --no-deps . \
    && groupadd --system --gid 10001 boxoffice \
    && useradd --system --uid 10001 --gid 10001 --no-create-home boxoffice

# numeric, so that Kubernetes' runAsNonRoot can verify it (deploy/node.yaml)
USER 10001:10001
EXPOSE 8080
# liveness only (no curl in a slim image); HAProxy's own check on /ready decides whether the node gets traffic
HEALTHCHECK --interval=5s --timeout=2s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]

# `serve` migrates (under an advisory lock, so replicas starting at once are safe) and serves.
CMD ["boxoffice", "serve", "--host", "0.0.0.0", "--port", "8080"]
