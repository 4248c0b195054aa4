#!/bin/bash
# The runs of this folder, in order, one at a time on the 2-core machine.
set -x
cd "$(dirname "$0")/../../.."
PY=/work/venv/bin/python
KH=/work/venv/bin/keras-hybrid
R=benchmarks/results/2026-11-29-cpu2-s12-overhead
for spe in 1 10; do
  for task in mnist1d-mlp mnist1d-cnn; do
    $PY $R/keras_guard.py $task 400 5 $spe 2>/dev/null | grep '^{' >> $R/keras_guard.jsonl
    $KH overhead --task $task --steps 400 --repetitions 5 --steps-per-execution $spe --out $R/tf-$task-spe$spe 2>/dev/null | grep overhead
  done
  KERAS_BACKEND=jax $PY $R/keras_guard.py mnist1d-mlp 400 5 $spe 2>/dev/null | grep '^{' >> $R/keras_guard.jsonl
  $KH overhead --backend jax --task mnist1d-mlp --steps 400 --repetitions 5 --steps-per-execution $spe --out $R/jax-mnist1d-mlp-spe$spe 2>/dev/null | grep overhead
done
