#!/usr/bin/env bash
# GPU check: every pipeline for a few steps on CUDA (bf16-mixed where it fits), plus the
# optimizer benchmark on CUDA. Writes a short report to ${OUT:-gpu_check}/report.txt.
# Run it on a machine with a GPU after `make install`: bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_check}
mkdir -p "$out"
export WANDB_MODE=offline ADAMLAB_RUNS="$out/runs"
bin=.venv/bin
report="$out/report.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$report" 2>&1
step() {  # name, command...
  local name=$1; shift
  local t0=$SECONDS
  if "$@" > "$out/$name.log" 2>&1; then status=ok; else status=FAILED; fi
  echo "$name: $status in $((SECONDS - t0)) s" | tee -a "$report"
  tail -n 3 "$out/$name.log" >> "$report"
}
step gnn $bin/adamlab train trainer=gpu pipeline=gnn trainer.max_epochs=20 \
  trainer.enable_progress_bar=false
step gnn_cora $bin/adamlab train trainer=gpu experiment=gcn_cora trainer.precision=32-true \
  trainer.enable_progress_bar=false
step rl $bin/adamlab train trainer=gpu trainer.precision=32-true pipeline=rl \
  pipeline.total_timesteps=20000 trainer.enable_progress_bar=false
step mlip $bin/adamlab train trainer=gpu trainer.precision=32-true pipeline=mlip \
  data.n_configs=200 trainer.max_epochs=3 trainer.enable_progress_bar=false
step optim_cuda_exact $bin/pytest -q tests/test_optim_reference.py -k cuda -rs
# optim on CUDA: the differential test (fused kernels, foreach chain, compiled steps)
step optim_cuda_differential $bin/pytest -q tests/test_optim_differential.py -k cuda -rs
step optim_bench $bin/python bench/optim_step.py --device cuda --repeats 5 --steps 20
cat "$out/optim_bench.log" >> "$report"
echo "report: $report"
