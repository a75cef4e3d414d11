# adamlab: `make run` trains the default job on embedded data; `make test` runs the suite.
# Everything installs into .venv. TORCH pins the torch build: here the CPU wheel on local
# disk; on a GPU machine the same pin pulls the CUDA build from PyPI.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
export WANDB_MODE ?= offline

.PHONY: install run test test-slurm test-slow lint bench studies clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

run: install
	$(BIN)/adamlab train experiment=quick
	$(BIN)/adamlab train pipeline=rl algo=ppo env.id=CartPole-v1 optim=adam optim.eps=1e-5 \
		pipeline.total_timesteps=30000
	$(BIN)/adamlab train pipeline=mlip data=emt model=schnet data.n_configs=100 \
		trainer.max_epochs=10

test: install
	$(BIN)/pytest -q

test-slurm: install  # needs a Slurm: bash scripts/slurm_up.sh (CI brings one up)
	$(BIN)/pytest -q -m slurm

test-slow: install
	$(BIN)/pytest -q -m slow

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/optim_step.py

studies: install  # every quick study in sequence, one thread (tiny tensors; cells use workers)
	OMP_NUM_THREADS=1 $(BIN)/python -m pipelines.study --all-quick

clean:
	rm -rf $(VENV) runs .cache
