# syntax=docker/dockerfile:1
# One image for every Darkroom process: gateway (the default command), workers, the scaler,
# migrations. Build: docker build -t darkroom .
ARG PYTHON_VERSION=3.11

# --- build: the virtualenv and the collected static files ---------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt
WORKDIR /app
COPY . .
# Static files go into the image; the gateways serve them with WhiteNoise (hashed names, compressed).
RUN DARKROOM_VAR_DIR=/app/var python manage.py collectstatic --noinput --verbosity 0

# --- runtime: no compilers, no pip cache, not root -------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin darkroom
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
# var/ holds upload spools (and, without S3, media): the only place the processes write.
RUN mkdir -p /app/var/tmp /app/var/media && chown -R darkroom:darkroom /app/var
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=project.settings \
    DARKROOM_VAR_DIR=/app/var
WORKDIR /app
USER darkroom
EXPOSE 8000
# The gateway's liveness; other processes (workers, the scaler) override or disable it.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2)"]
# exec: uvicorn is PID 1 and gets SIGTERM itself, then finishes the requests in flight.
# X-Forwarded-For only from TRUSTED_PROXIES (unset: from no one; uvicorn's default trusts 127.0.0.1).
# WebSockets: project/serving.py's UVICORN_FLAGS.
CMD ["sh", "-c", "exec uvicorn project.asgi:application --host 0.0.0.0 --port 8000 --no-access-log --timeout-graceful-shutdown 30 --ws gateway.live.ws_protocol:LeanWebSocketProtocol --ws-per-message-deflate false --ws-max-size 65536 --forwarded-allow-ips \"${TRUSTED_PROXIES:-}\""]
