# cgp-ipvs-helper: set-up, demonstration, tests, benchmarks and the RPM.
# Every target that needs tools installs them first (Debian, as root), so each works on a
# fresh machine.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := user-mode-linux kmod ipvsadm iproute2 iputils-arping rpm rpmlint python3 python3-venv
UML := $(PY) -m tests.lab.uml

.PHONY: setup demo test lint unit kernel-tests bench rpm clean

setup: $(VENV)/.installed

.apt-installed:
	@if ! command -v linux.uml >/dev/null || ! command -v ipvsadm >/dev/null \
	    || ! command -v rpmbuild >/dev/null || ! command -v arping >/dev/null \
	    || ! command -v rpmlint >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	fi
	@touch $@

$(VENV)/.installed: pyproject.toml .apt-installed
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

demo: setup
	$(UML) -- python -m tests.lab.demo

lint: setup
	$(VENV)/bin/ruff check cgp_ipvs_helper tests packaging
	$(VENV)/bin/ruff format --check cgp_ipvs_helper tests packaging

unit: setup
	$(PY) -m pytest tests/unit

kernel-tests: setup
	$(UML) --timeout 2400 -- python -m pytest -p no:cacheprovider tests/kernel

test: lint unit kernel-tests

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .apt-installed build dist *.egg-info
