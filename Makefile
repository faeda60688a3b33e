# cgp-ipvs-helper: set-up, demonstration, tests, benchmarks and the RPM.
# Every target that needs tools installs them first (Debian, as root), so each works on a
# fresh machine.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := user-mode-linux kmod ipvsadm iproute2 iputils-arping iputils-ping libndp-tools nftables gcc libc6-dev rpm rpmlint python3 python3-venv
APT_PACKAGES += debootstrap
UML := $(PY) -m lab.uml

.PHONY: setup demo test lint unit packaging-test py39-test kernel-tests boot-test bench rpm clean

setup: $(VENV)/.installed

.apt-installed:
	@if ! command -v linux.uml >/dev/null || ! command -v ipvsadm >/dev/null \
	    || ! command -v rpmbuild >/dev/null || ! command -v arping >/dev/null \
	    || ! command -v rpmlint >/dev/null || ! command -v nft >/dev/null \
	    || ! command -v cc >/dev/null || ! command -v ndptool >/dev/null \
	    || ! command -v ping >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	fi
	@touch $@

$(VENV)/.installed: pyproject.toml .apt-installed
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

demo: setup
	$(UML) -- python -m lab.demo

lint: setup
	$(VENV)/bin/ruff check cgp_ipvs_helper tests lab bench packaging
	$(VENV)/bin/ruff format --check cgp_ipvs_helper tests lab bench packaging

unit: setup
	$(PY) -m pytest tests/unit

# The RPM built by rpmbuild, checked by rpm and rpmlint; the Python chooser of its launchers.
packaging-test: setup
	$(PY) -m pytest tests/packaging

# A real Python 3.9 imports every module. Not in make test: no 3.9 comes from Debian or a
# package registry. make py39-test PY39=/path/to/python3.9 (fails without it).
py39-test: setup
	PY39="$(PY39)" $(PY) -m pytest tests/py39

kernel-tests: setup
	$(UML) --timeout 2400 -- python -m pytest -p no:cacheprovider tests/kernel

# The RPM installed by rpm into a Debian root, booted with systemd as PID 1 in user-mode Linux
# (as root). The root comes from debootstrap, cached in /var/cache/cgp-ipvs-helper by a hash of
# its recipe (tests/boot/rootfs.py).
boot-test: setup
	@command -v debootstrap >/dev/null \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap)
	$(PY) -m pytest -p no:cacheprovider tests/boot

test: lint unit packaging-test kernel-tests boot-test

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .apt-installed build dist *.egg-info

# --- make rpm: dist/cgp-ipvs-helper-<version>-<release>.noarch.rpm ------------------------------
# Works with Debian's rpm package as well as on RHEL. The wheels of the bundled pyroute2, netaddr
# and attrs (versions pinned in the spec, hashes checked by it) are downloaded into build/, never
# committed. --nodeps: Debian's rpm database knows nothing of dpkg's packages (BuildRequires).
# rpmlint must report no errors (filters, each justified: packaging/*.rpmlintrc), or the target
# fails. RPM_PACKAGER='Name <mail>' sets the Packager tag.
RPM_VERSION := $(shell sed -n 's/^__version__ *= *"\([^"]*\)".*/\1/p' cgp_ipvs_helper/__init__.py)
RPM_RELEASE ?= 1
RPM_SPEC := packaging/cgp-ipvs-helper.spec
RPM_TOP ?= $(CURDIR)/build/rpm
RPM_DIST ?= dist
RPM_NAME := cgp-ipvs-helper-$(RPM_VERSION)-$(RPM_RELEASE).noarch.rpm
RPM_WHEELS = $(shell sed -n 's/^%global vendor_\([a-z0-9]*\) \([^ ]*\)$$/\1==\2/p' $(RPM_SPEC))
RPM_SOURCES = cgp_ipvs_helper network-scripts packaging sysconfig pyproject.toml \
	$(wildcard README.md LICENSE)
RPM_PIP = $(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m pip

rpm: .apt-installed
	rm -rf $(RPM_TOP)
	mkdir -p $(RPM_TOP)/SOURCES $(RPM_DIST)
	$(RPM_PIP) download -q --no-deps --only-binary=:all: -d $(RPM_TOP)/SOURCES $(RPM_WHEELS)
	tar -czf $(RPM_TOP)/SOURCES/cgp-ipvs-helper-$(RPM_VERSION).tar.gz --exclude=__pycache__ \
	    --sort=name --owner=0 --group=0 --numeric-owner \
	    --transform 's,^,cgp-ipvs-helper-$(RPM_VERSION)/,' $(RPM_SOURCES)
	rpmbuild -bb --nodeps --quiet --define '_topdir $(RPM_TOP)' \
	    --define 'pkg_version $(RPM_VERSION)' --define 'pkg_release $(RPM_RELEASE)' \
	    $(if $(RPM_PACKAGER),--define 'packager $(RPM_PACKAGER)') $(RPM_SPEC)
	cp $(RPM_TOP)/RPMS/noarch/$(RPM_NAME) $(RPM_DIST)/$(RPM_NAME)
	rpmlint -r packaging/cgp-ipvs-helper.rpmlintrc $(RPM_DIST)/$(RPM_NAME)
	@echo "built $(RPM_DIST)/$(RPM_NAME)"
