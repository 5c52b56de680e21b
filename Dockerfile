# ussd-gateway in a container: `serve` as the entry point, a non-root user, HTTP on
# 0.0.0.0:8080 inside and the admin routes on 8081, both behind tokens from the
# environment (the image refuses to start without them):
#
#   USSD_HTTP_TOKENS          gateway routes' bearer token(s), comma-separated (required,
#                             unless USSD_HTTP_ALLOW_FROM or USSD_HTTP_SIGNING_SECRETS is set)
#   USSD_ADMIN_TOKEN          /metrics, /admin/menus/*, /sim, /menus/graph (required)
#   USSD_SESSIONS_REDIS_URL   redis://host:6379/0 (sessions and the demo backend; needed
#                             for more than one container)
#   USSD_<SECTION>_<KEY>      any other key of config.toml; SMPP binds need a config file
#                             (mount one and pass `--config /path`)
#
#   docker build -t ussd-gateway .
#   docker run -p 8080:8080 -e USSD_HTTP_TOKENS=... -e USSD_ADMIN_TOKEN=... ussd-gateway

# ---- build: one wheel of the project and wheels of its dependencies ----------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ussd_gateway ussd_gateway
COPY menus menus
COPY smpp smpp
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- run: the wheels installed, nothing to build with --------------------------------------
FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ussd
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
COPY deploy/container.toml /etc/ussd-gateway/config.toml
WORKDIR /tmp
USER ussd
ENV PYTHONUNBUFFERED=1
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["ussd-gateway", "serve"]
CMD ["--config", "/etc/ussd-gateway/config.toml"]
