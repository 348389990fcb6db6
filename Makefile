# The two commands: `make serve` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JS_STAMP := tests/js/node_modules/.installed
PEERS_STAMP := bench/peers/node_modules/.installed
UI_STAMP := web/ui/node_modules/.installed

.PHONY: serve test lint bench services ui browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint,peers]'
	touch $@

$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --silent --no-audit --no-fund
	touch $@

# The peer servers bench/ compares with (y-websocket-server, Hocuspocus).
$(PEERS_STAMP): bench/peers/package.json bench/peers/package-lock.json
	cd bench/peers && npm ci --silent --no-audit --no-fund
	touch $@

# The dashboard (web/ui/ -> web/static/, shipped in the wheel): `npm ci` from the lock,
# then the esbuild bundle.
$(UI_STAMP): web/ui/package.json web/ui/package-lock.json
	cd web/ui && npm ci --silent --no-audit --no-fund
	touch $@

ui: $(UI_STAMP)
	cd web/ui && node build.mjs

# The browser tests drive Debian's Chromium through its chromedriver (never a download).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || (apt-get update && apt-get install -y chromium chromium-driver)

serve: $(STAMP) ui
	$(BIN)/blackboard serve

# Postgres and Redis are normally running on this kind of machine; start them if not.
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && exit 0; sleep 1; done; echo "Postgres or Redis did not start" >&2; exit 1

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) $(JS_STAMP) $(PEERS_STAMP) ui browser services lint
	$(BIN)/pytest -q

bench: $(STAMP) $(JS_STAMP) $(PEERS_STAMP) services
	$(BIN)/python -m bench
