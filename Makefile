# The two commands: `make demo` and `make test`. Both set up what they need first.
VENV := .venv
BIN := $(VENV)/bin
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TF_CPP_MIN_LOG_LEVEL := 2
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120

.PHONY: setup demo test samples placeholder clean

setup:
	@bash scripts/setup.sh

# The main job on the embedded default: the classify-archive flow (Prefect's ephemeral API)
# over the sample recordings with the default model; results in results/demo/.
demo: setup
	$(BIN)/audioclf run samples/ --out results/demo --csv
	@echo "results: results/demo/segments/ results/demo/recordings/ (and .csv beside them)"

# Set up and run the whole test suite (what CI runs).
test:
	@bash scripts/setup.sh --test
	$(BIN)/python -m pytest -q

# Rebuild the sample recordings and test clips from Debian packages (see samples/SOURCES.md).
samples: setup
	$(BIN)/python scripts/make_samples.py --out samples
	$(BIN)/python scripts/make_samples.py --fixtures tests/data

placeholder: setup
	$(BIN)/python scripts/build_placeholder_bundle.py --force

clean:
	rm -rf results/ .pytest_cache
