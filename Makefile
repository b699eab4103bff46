# `make run` and `make test` do all set-up themselves on a machine that has never seen the project.
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# pip takes the CPU build of torch==2.13.0 from local disk on these machines (see README).
# jax is installed beside torch: the reference environment has both, and JAX runs need it.
EXTRAS  := pytorch,jax,data,cluster,bench,dev
# The versions measured to co-install (`algoperf docker lock`): the images and .venv install the
# same ones, so a release on PyPI changes neither until the lock is rewritten.
LOCK    := docker/constraints.txt

.PHONY: install run test test-heavy lint browser docker-prereqs clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --constraint $(LOCK) -e '.[$(EXTRAS)]'
	touch $(STAMP)

# Headless Chromium opens the HTML report in the report tests (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# Docker for tests/test_docker.py: a daemon (docker.io installed and dockerd started, without the
# default bridge, when none answers), then the CPU test image built in the background while the
# other tests run. When no daemon can start, the Docker tests skip and say why.
docker-prereqs: install
	@bash docker/ci-daemon.sh
	@bash docker/cpu-test-image.sh --background

run: install
	$(VENV)/bin/algoperf run

lint: install
	$(VENV)/bin/ruff check algoperf workloads submissions scoring scripts tests
	$(VENV)/bin/hadolint docker/Dockerfile.pytorch docker/Dockerfile.jax

# The suite runs in one pytest-xdist worker per core (each with one math thread: tests/conftest.py);
# tests/test_docker.py runs last, so that the CPU test image has the whole suite's time to build.
DOCKER_TESTS := tests/test_docker.py
test: install docker-prereqs browser lint
	$(PYTHON) -m pytest -q -n auto --dist worksteal --durations=25 $(filter-out $(DOCKER_TESTS),$(sort $(wildcard tests/test_*.py)))
	$(PYTHON) -m pytest -q --durations=5 $(DOCKER_TESTS)

# The tests marked heavy (every workload variant's synthetic run), left out of `make test`.
test-heavy: install docker-prereqs
	$(PYTHON) -m pytest -q -m heavy

clean:
	rm -rf $(VENV) .pytest_cache
