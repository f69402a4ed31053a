# syntax=docker/dockerfile:1
# foundry-monitor image: `docker build -t foundry-monitor .`, then
#   docker run --rm -p 9708:9708 -e FOUNDRY_TOKEN -e FOUNDRY_HOSTNAME \
#     -v "$PWD/config/monitor.yaml:/etc/foundry-monitor/monitor.yaml:ro" foundry-monitor
# Pin the base images by digest (python:3.11-slim@sha256:...) for reproducible builds.

# --- builder: the project and its dependencies as wheels ---------------------------------------------------
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor ./monitor
RUN python -m pip wheel --wheel-dir /wheels .

# --- runtime: the wheels installed without a compiler, pip cache or sources ---------------------------------
FROM python:3.11-slim AS runtime
LABEL org.opencontainers.image.title="foundry-monitor" \
      org.opencontainers.image.description="Watches Palantir Foundry live deployments, exports Prometheus metrics and emits change events." \
      org.opencontainers.image.licenses="Apache-2.0"
# No .pyc files: the root filesystem is read-only in Kubernetes.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels foundry-live-deployment-monitor
# A fixed numeric UID, so that Kubernetes' runAsNonRoot can verify it and volumes can be chowned to it.
RUN groupadd --system --gid 10001 foundry \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/foundry-monitor --no-create-home \
       --shell /usr/sbin/nologin foundry \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/foundry-monitor \
    && install -d -m 0755 /etc/foundry-monitor
# The default state path (./state/monitor.sqlite3) lands in the writable state directory.
WORKDIR /var/lib/foundry-monitor
USER 10001:10001
EXPOSE 9708
# /healthz answers while the process lives (plain HTTP; with server.tls or server.basic_auth set, use the
# orchestrator's own probe instead).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9708/healthz', timeout=4)"]
ENTRYPOINT ["foundry-monitor"]
CMD ["run", "--config", "/etc/foundry-monitor/monitor.yaml"]
