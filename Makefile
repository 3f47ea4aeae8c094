# Two entry points do all set-up on a fresh machine (see README):
#   make quickstart   install into .venv, then run the whole chain on synthetic data
#   make test         install into .venv, then run the test suite
#   make test-fast    the same without the tests marked slow (pytest.ini says which)
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= cpu,figures,serving,test
SERVING_API ?= tensorflow-serving-api==2.21.*
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: install quickstart test test-fast clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	# --no-deps: it asks for the full `tensorflow`; tensorflow-cpu provides the same module.
	$(PY) -m pip install --quiet --no-deps '$(SERVING_API)'
	touch $@

quickstart: install
	$(PY) -m launch.quickstart $(ARGS)

test: install
	$(PY) -m pytest tests -n auto $(ARGS)

test-fast: install
	$(PY) -m pytest tests -n auto -m "not slow" $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
