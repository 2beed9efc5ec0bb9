PYTHON ?= python3

.PHONY: install test lint demo bench

install:
	bash scripts/install.sh $(PYTHON)

test:
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check .

demo:
	cram demo

bench:
	$(PYTHON) -m bench.run
