# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000
WS_PORT ?= 8001

.PHONY: setup run stack api-key serve serve-http serve-ws worker requeue cleanup scale test lint format bench bench-api bench-worker-floor bench-downloads bench-ws \
	bench-scaler bench-thumbor bench-memory bench-formats chaos clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0

# Development server with the embedded default (no services needed): uvicorn, reloading on code
# changes. Like `make serve`, it hands request bodies over in pieces, so an upload of any size
# costs constant memory. Daphne stays available as `manage.py runserver`.
RELOAD_DIRS := $(foreach dir,project gateway processing scaler,--reload-dir $(dir))

run: setup
	$(BIN)/uvicorn project.asgi:application --host $(HOST) --port $(PORT) --reload $(RELOAD_DIRS) $(UVICORN_WS) $(UVICORN_TRUST)

# The full stack on one machine, in one command: the gateway on PORT, the workers, the re-publisher
# and the clean-up (Procfile), run by honcho (project/stack.py), each line prefixed by its process;
# Ctrl-C stops them all. Their settings come from STACK_ENV, which the first run writes:
# deploy/stack.env (the services on this machine) and a SECRET_KEY of its own.
STACK_ENV ?= .env
HONCHO_RUN = $(BIN)/honcho run -e $(STACK_ENV)

stack: $(STAMP) $(STACK_ENV)
	$(HONCHO_RUN) $(BIN)/python manage.py create_database
	$(HONCHO_RUN) $(BIN)/python manage.py migrate --noinput
	$(HONCHO_RUN) $(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python -m project.stack -e $(STACK_ENV) --port $(PORT)

$(STACK_ENV):
	{ cat deploy/stack.env; echo "SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')"; } > $@
	@echo "Wrote $@: the services on this machine and a new SECRET_KEY. Edit it to point elsewhere."

# A new API key for the full stack, printed once (only its hash is stored): KEY=$$(make -s api-key)
api-key: $(STAMP)
	@$(HONCHO_RUN) $(BIN)/python manage.py create_api_key $(or $(NAME),me)

# One process for HTTP and WebSockets: uvicorn streams request bodies to disk (constant memory).
# WebSockets: uvicorn's sans-I/O protocol, less what an open socket does not need (gateway/live/ws_protocol.py),
# and no per-message compression keep a socket small (`make bench-ws` measures it). The flags are
# project/serving.py's UVICORN_FLAGS (a test compares them).
UVICORN_WS := --ws gateway.live.ws_protocol:LeanWebSocketProtocol --ws-per-message-deflate false --ws-max-size 65536 \
	--backlog 4096
# X-Forwarded-For and -Proto only from TRUSTED_PROXIES (empty: from no one). uvicorn's own default
# trusts 127.0.0.1, so that any local client could pick its address, and so its rate limits.
UVICORN_TRUST = --forwarded-allow-ips "$${TRUSTED_PROXIES:-}"

# Several processes (WEB_CONCURRENCY) share the port, each with its own channel in Redis: an event
# reaches a socket whichever holds it. Each may open as many sockets as the machine's hard limit on
# descriptors allows (raised to it here); docs/sockets-at-scale.md says what else a machine needs.
serve: setup
	ulimit -n "$$(ulimit -Hn)" 2>/dev/null || ulimit -n 20000 2>/dev/null || true; $(BIN)/uvicorn project.asgi:application --host $(HOST) --port $(PORT) \
		--workers $${WEB_CONCURRENCY:-1} --no-access-log --timeout-graceful-shutdown 30 $(UVICORN_WS) $(UVICORN_TRUST)

# Behind nginx (deploy/nginx): the HTTP API on uvicorn processes, one per core, /ws/ on uvicorn.
# ASGI, so that async views (a long poll, GET /api/v1/jobs/{id}?wait=N) hold no worker or thread.
serve-http: setup
	$(BIN)/uvicorn project.asgi:application --host $(HOST) --port $(PORT) \
		--workers $${WEB_CONCURRENCY:-$$(nproc)} --no-access-log --timeout-graceful-shutdown 30 $(UVICORN_WS) \
		$(UVICORN_TRUST)

serve-ws: setup
	ulimit -n "$$(ulimit -Hn)" 2>/dev/null || ulimit -n 20000 2>/dev/null || true; $(BIN)/uvicorn project.asgi:application --host $(HOST) --port $(WS_PORT) \
		--no-access-log $(UVICORN_WS) $(UVICORN_TRUST)


# Worker processes for the full stack (BROKER_URL set), each replaced within a second if it dies:
# WORKER_PROCESSES of them, WORKER_THREADS threads each (run_workers reads both).
worker: $(STAMP)
	$(BIN)/python manage.py run_workers

requeue: $(STAMP)
	$(BIN)/python manage.py requeue_stale --every 30

# Removes files of jobs past FILE_TTL_SECONDS and files whose job is gone, every hour (full stack).
cleanup: $(STAMP)
	$(BIN)/python manage.py cleanup_files --every 3600

# On four processes (pytest-xdist; TEST_PROCESSES=1 for one), a file's tests together on one: on
# two cores, since most live tests spend their time waiting for the servers and workers they start.
# Measured under CI, six runs in a row: 3:29 to 3:59. The cores are nearly always busy, so what
# the suite costs is CPU, mostly in the processes it starts (see docs/testing.md).
# The tests that stop or restart PostgreSQL, RabbitMQ or Redis do it to servers of their own
# (bench/private_services.py), so every test can run beside the others.
TEST_PROCESSES ?= 4

test: $(STAMP)
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# mypy: strict on processing/ and gateway/, plain on project/ and scaler/ (pyproject.toml). Its cache
# (.mypy_cache) makes a second run a few seconds; the first, cold, costs about 40 s of CPU.
# mypy reads no test or benchmark, so collecting the suite (5 s) is what catches a name one of them
# imports and no longer exists.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@mkdir -p var
	@$(BIN)/pytest --collect-only -q -p no:randomly > var/collected.log 2>&1 \
		|| (tail -n 40 var/collected.log; false)
	@tail -n 1 var/collected.log

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The full stack against the raw Pillow loop, one request per job (upload to result bytes; a server
# that answers 202 is long-polled and downloaded from): CPU per job by process, the goals.
# BENCH_ARGS="--services grayscale,resize,sobel" for several, "--mode long-poll" for three requests.
bench: $(STAMP)
	$(BIN)/python -m bench.pipeline $(BENCH_ARGS)

# The job read against a bare view on each server, then the floor under a submission on uvicorn: bare
# views receiving the same upload, against the real submit. BENCH_ARGS="--measure uploads" for that alone.
bench-api: $(STAMP)
	$(BIN)/python -m bench.api $(BENCH_ARGS)

# What a message costs a worker process when its actor does nothing: the project's worker, Dramatiq's
# defaults, no middleware (the floor under the workers' goal of `make bench`).
bench-worker-floor: $(STAMP)
	$(BIN)/python -m bench.worker_floor $(BENCH_ARGS)

# A result's download through nginx: sent by the gateway, then by nginx itself (X-Accel-Redirect).
bench-downloads: $(STAMP)
	$(BIN)/python -m bench.downloads $(BENCH_ARGS)

# WebSocket scale: 10,000 clients watching jobs on gateway processes sharing one port (PostgreSQL,
# redis-server), then a reconnect storm; a verdict per goal. The goals' run (docs/sockets-at-scale.md):
# BENCH_ARGS="--clients 100000 --rate 200".
bench-ws: $(STAMP)
	$(BIN)/python -m bench.websockets $(BENCH_WS_ARGS) $(BENCH_ARGS)

# A burst of 49 MP JPEGs at 2 worker processes in a 1 GB memory cgroup (needs root for the cgroup):
# OOM kills, 5xx and jobs completed. BENCH_MEMORY_ARGS="--no-admission" for the same without admission.
bench-memory: $(STAMP)
	$(BIN)/python -m bench.memory $(BENCH_MEMORY_ARGS)

# AVIF and JPEG XL against JPEG on HD photos (bytes at equal SSIM), and the cost of a result's placeholder.
# BENCH_FORMATS_ARGS="--photos DIR --avif-speed 4 --jxl-effort 7" for your own photos at other speeds.
bench-formats: $(STAMP)
	$(BIN)/python -m bench.formats $(BENCH_FORMATS_ARGS)

# The fault suite on the full stack: worker kills and PostgreSQL, RabbitMQ and Redis restarts under
# load (it stops and starts this machine's services). CHAOS_ARGS="--jobs 60 --fault redis-restart".
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

bench-scaler: $(STAMP)
	$(BIN)/python -m bench.scaler $(BENCH_ARGS)

# Darkroom's full stack against thumbor, same images and cores: upload to result bytes against request
# to bytes, with each side's SSIM to a full-decode Lanczos reference. thumbor in a virtualenv of its
# own (it pins Pillow < 13). The file loader needs no pycurl, so no native extras.
THUMBOR_VENV := var/thumbor-venv
THUMBOR_VERSION := 7.8.0

$(THUMBOR_VENV)/.installed-$(THUMBOR_VERSION):
	test -x $(THUMBOR_VENV)/bin/python || $(PYTHON) -m venv $(THUMBOR_VENV)
	$(THUMBOR_VENV)/bin/pip install --quiet --disable-pip-version-check thumbor==$(THUMBOR_VERSION)
	rm -f $(THUMBOR_VENV)/.installed-* && touch $@

bench-thumbor: $(STAMP) $(THUMBOR_VENV)/.installed-$(THUMBOR_VERSION)
	$(BIN)/python -m bench.thumbor --thumbor $(THUMBOR_VENV)/bin/thumbor $(BENCH_ARGS)

# The autoscaler (full stack): worker processes by queue depth + jobs in flight; with
# SCALE_ARGS=--gateways also 1..3 gateways behind a private nginx on NGINX_LISTEN (127.0.0.1:8000).
scale: setup
	$(BIN)/python manage.py scale_workers $(SCALE_ARGS)

clean:
	rm -rf var/media var/tmp var/staticfiles var/darkroom.sqlite3*
