# Two commands: `make run` (install + app on a demo workspace) and `make test` (install + test suite).
# Both work from a clean clone and are idempotent.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8501
PIRL_HOME ?= $(CURDIR)/pirl-workspace
export PIRL_HOME

.PHONY: install run test test-fast system lint screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Debian's Chromium for the real-browser tests (Playwright's own download cannot be used offline), a C++
# compiler for torch.compile on the CPU, Orthanc + its DICOMweb plugin for the PACS tests, and Caddy + openssl
# for the README's TLS recipe (tests/test_tls_proxy.py).
system:
	@test -x /usr/bin/chromium && command -v g++ >/dev/null && command -v Orthanc >/dev/null \
		&& command -v caddy >/dev/null && command -v openssl >/dev/null \
		&& test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so || scripts/install-system-packages.sh

run: install
	$(BIN)/pirl app --demo --port $(PORT)

# Two pytest-xdist workers, each taking whole modules (their module fixtures train once), share the cores.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: install system
	$(PYTEST)

# The edit-test loop: no browser, no training beyond a few steps (a few minutes). `make test` is what CI runs.
test-fast: install
	$(PYTEST) -m "not slow and not browser"

# The README's screenshots, from a real run: BUSI (or SCREENSHOT_DATA, class sub-folders) pretrained at this machine's
# defaults, compared and exported (about 25 minutes on a 2-core CPU the first time; the workspace is kept).
SCREENSHOT_DATA ?= ../shared/data/busi256
SCREENSHOT_WS ?= $(CURDIR)/pirl-screenshots
screenshots: install system
	$(BIN)/python bench/screenshot_workspace.py $(SCREENSHOT_DATA) $(SCREENSHOT_WS)
	$(BIN)/python bench/screenshots.py $(SCREENSHOT_WS) $(SCREENSHOT_DATA) docs/screenshots

lint: install
	$(BIN)/ruff check pirl_core app_pages app.py studio.py tests bench

clean:
	rm -rf $(VENV) *.egg-info
