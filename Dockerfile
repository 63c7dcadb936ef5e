# One boxoffice node. docker-compose.yml runs three of these behind HAProxy, against PostgreSQL 16,
# Redis 7 and Apache Kafka. Every setting comes from the environment (see CONTRACT.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so a code change does not reinstall them: install the project's dependency
# list from pyproject.toml alone, then the code. (README.md* matches nothing if there is no README yet.)
COPY pyproject.toml README.md* ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY server ./server
COPY handlers ./handlers
COPY realtime ./realtime
COPY storage ./storage
COPY jobs ./jobs
COPY loadtests ./loadtests
COPY haproxy.cfg ./
# pyproject names README.md as the long description; a checkout without one must still build
RUN { [ -f README.md ] || echo "boxoffice" > README.md; } \
    && pip install --no-deps . \
    && useradd --system --uid 10001 --no-create-home boxoffice

USER boxoffice
EXPOSE 8080
# liveness only; HAProxy's own check on /ready decides whether the node gets traffic
HEALTHCHECK --interval=5s --timeout=2s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"

# `serve` migrates (under an advisory lock, so three replicas starting at once are safe) and serves.
CMD ["boxoffice", "serve", "--host", "0.0.0.0", "--port", "8080"]
