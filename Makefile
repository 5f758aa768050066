# riskwatch — the front door. `make help` lists the targets.
#
# Everything runs through uv in a project-local .venv; `make` installs uv first when the
# machine does not have it (a fresh machine needs only Python and make).

SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
RUN := $(UV) run --frozen
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z][a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m pip install --user --quiet uv

.venv/.synced: $(UV) uv.lock pyproject.toml $(wildcard */*/pyproject.toml) tools/cli/pyproject.toml
	$(UV) sync --frozen --all-packages
	@touch $@

.PHONY: install
install: .venv/.synced ## install Python and all workspace members into .venv

.PHONY: lint
lint: install ## ruff lint and format check, and the processor's import contract
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) pytest -q -p no:cacheprovider services/risk_processor/tests/test_processor_imports.py

.PHONY: fuzz
fuzz: install ## >= 10,000 generated malformed inputs per decoder (FUZZ_EXAMPLES), counts printed
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-10000} $(RUN) pytest tests/fuzz -q -p no:cacheprovider

.PHONY: fmt
fmt: install ## format and auto-fix
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

.PHONY: typecheck
typecheck: install ## mypy (strict) over libs, services, tools and bench
	$(RUN) mypy libs/common/src tools/cli bench services/risk_processor/bench $(foreach s,ingestor risk_processor ai_analyst notifier bybit_sim,services/$(s)/$(s))

.PHONY: unit
unit: install promtool ## tests that need no broker
	$(RUN) pytest -m "not integration" $(PYTEST_ARGS)

.PHONY: test
test: install kcat promtool chromium lint typecheck ## everything CI runs: lint, types, unit and integration tests
	$(RUN) pytest $(PYTEST_ARGS)

.PHONY: test-integration
test-integration: install kcat chromium ## only the tests that need a broker (RISKWATCH_BROKER picks it)
	$(RUN) pytest -m integration $(PYTEST_ARGS)

.PHONY: kcat
kcat: ## install kcat (a Kafka client nobody here wrote) when the machine allows it
	@bash scripts/ensure-kcat.sh

.PHONY: promtool
promtool: ## install promtool (Prometheus' checker) for the alert-rule tests when the machine allows it
	@bash scripts/ensure-promtool.sh

.PHONY: chromium
chromium: ## install Debian's chromium for the web overview test when the machine allows it
	@bash scripts/ensure-chromium.sh

.PHONY: schemas
schemas: install ## regenerate the JSON Schemas of every event into schemas/
	$(RUN) riskwatch schemas

.PHONY: monitoring
monitoring: install ## write the Kubernetes PrometheusRule from deploy/observability's rules file
	$(RUN) riskwatch monitoring

.PHONY: broker
broker: install ## run a local broker on 127.0.0.1:9092 (RISKWATCH_BROKER=apache|tansu|container)
	$(RUN) riskwatch broker

.PHONY: demo
demo: install ## run the whole product on the simulator; DEMO_SECONDS=N stops after N s
	$(RUN) riskwatch demo

.PHONY: bench-ingest
bench-ingest: install ## ingestor throughput and latency on a fresh local broker
	$(RUN) python -m ingestor.bench

.PHONY: bench-risk
bench-risk: install ## risk processor throughput and latency on a fresh local broker
	$(RUN) python services/risk_processor/bench/bench_risk.py $(BENCH_ARGS)

.PHONY: profile-risk
profile-risk: install ## where the processor's time per record goes (py-spy on the throughput run)
	@mkdir -p var
	$(RUN) python services/risk_processor/bench/profile_risk.py run --raw var/profile-risk.txt \
		$(PROFILE_ARGS) | tee var/profile-risk.log
	$(RUN) python services/risk_processor/bench/profile_risk.py summarize var/profile-risk.txt \
		$$(sed -n 's/^records=\([0-9]*\) cpu_s=\([0-9.]*\)$$/--records \1 --cpu-s \2/p' var/profile-risk.log)

.PHONY: bench-e2e
bench-e2e: install ## exchange frame -> fake Telegram latency, whole pipeline (E2E_ARGS="--seconds 15")
	$(RUN) python -m bench.e2e $(E2E_ARGS)

.PHONY: chaos
chaos: install ## every service under injected faults (kills, outages, poison, broker restart); CHAOS_ARGS
	$(RUN) python -m bench.chaos $(CHAOS_ARGS)

.PHONY: bench-analyst
bench-analyst: install ## AI analyst: LLM calls, tokens, USD and latency of an alert storm (fake gateway)
	$(RUN) python -m ai_analyst.bench

.PHONY: k8s
k8s: ## render the Kubernetes overlays
	kubectl kustomize deploy/k8s/overlays/dev
	kubectl kustomize deploy/k8s/overlays/prod

.PHONY: clean
clean: ## remove caches and demo state
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
