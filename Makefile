# Two commands set up a fresh machine: `make demo` and `make test`. Both install first, into .venv, with the
# pinned versions of constraints-ci.txt. The install runs again only when pyproject.toml or
# constraints-ci.txt is newer than the stamp it leaves in .venv, so a second call starts at once.
#
#   make demo DEMO_ARGS=--quick                        # arguments for `is5net demo`
#   make test PYTEST_ARGS=tests/test_architecture.py   # arguments for pytest (default: every test)

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# The Label Studio server of tests/test_label_studio.py: its own venv (its pins conflict with ours).
LS_VENV := .venv-label-studio
LS_STAMP := $(LS_VENV)/.installed
DEMO_ARGS ?=
PYTEST_ARGS ?=
# The checks run inside the venv as CI's shell did (activated), so anything they start by name is the venv's.
ACTIVATE := . $(VENV)/bin/activate

.PHONY: help install demo test chromium label-studio

help:
	@echo "make demo   install (once) and run the demo: the paper's result in miniature, CPU, under 10 minutes"
	@echo "make test   install (once, with Chromium for the browser tests) and run lint, format check and tests"
	@echo "make install   only the install (a venv in $(VENV), pinned by constraints-ci.txt)"

install: $(STAMP)

# torch and torchvision go first, alone, so pip settles on the pinned 2.14.1 build before anything that
# depends on torch can pull in another one (the CPU-only 2.13 has no working torchvision).
$(STAMP): pyproject.toml constraints-ci.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -c constraints-ci.txt torch torchvision
	# sam2 ships only its source; built against the torch above, without its optional CUDA extension.
	$(VENV)/bin/python -m pip install -q -c constraints-ci.txt wheel setuptools
	SAM2_BUILD_CUDA=0 $(VENV)/bin/python -m pip install -q -c constraints-ci.txt --no-build-isolation sam2
	$(VENV)/bin/python -m pip install -q -c constraints-ci.txt -e ".[dev]"
	touch $@

demo: install
	$(ACTIVATE) && is5net demo $(DEMO_ARGS)

test: install chromium label-studio
	$(ACTIVATE) && ruff check . && ruff format --check . && python -m pytest -q $(PYTEST_ARGS)

label-studio: $(LS_STAMP)

$(LS_STAMP): constraints-label-studio.txt
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LS_VENV)/bin/python -m pip install -q -c constraints-label-studio.txt label-studio
	touch $@

# The browser tests drive the system's Chromium (Playwright cannot download its own here): Debian's package,
# unless IS5NET_CHROMIUM names another.
chromium:
	@[ -n "$${IS5NET_CHROMIUM:-}" ] || command -v chromium >/dev/null || { \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		$$sudo apt-get update -q && $$sudo apt-get install -y -q chromium; }
