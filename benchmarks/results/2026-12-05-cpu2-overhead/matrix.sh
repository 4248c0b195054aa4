#!/bin/bash
# The short-step runs of this folder, one at a time on the 2-core machine:
# every arm (plain, hybrid with prediction off, Keras' finite check) in one
# process per task, alternated. Usage: matrix.sh CONFIG [LABEL]
set -x
cd "$(dirname "$0")/../../.."
KH=${KH:-keras-hybrid}
R=benchmarks/results/2026-12-05-cpu2-overhead
CONFIG=${1:-default}
LABEL=${2:-$CONFIG}
for spe in 1 10; do
  for task in mnist1d-mlp mnist1d-cnn; do
    $KH overhead --config $CONFIG --task $task --steps 400 --repetitions 7 --steps-per-execution $spe --out $R/$LABEL/tf-$task-spe$spe 2>&1 | grep -v "^wrote"
  done
  $KH overhead --config $CONFIG --backend jax --task mnist1d-mlp --steps 400 --repetitions 7 --steps-per-execution $spe --out $R/$LABEL/jax-mnist1d-mlp-spe$spe 2>&1 | grep -v "^wrote"
done
$KH overhead --config $CONFIG --backend torch --task mnist1d-mlp --steps 400 --repetitions 7 --out $R/$LABEL/torch-mnist1d-mlp-spe1 2>&1 | grep -v "^wrote"
