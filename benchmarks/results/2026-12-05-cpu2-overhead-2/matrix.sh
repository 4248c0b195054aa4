#!/bin/bash
# The overhead runs of this folder, one at a time on the 2-core machine:
# every arm (plain, hybrid with prediction off, Keras' finite check) in one
# process per task, alternated. Short steps (400 steps, $REPS repetitions,
# default 15; 7 in ../2026-12-05-cpu2-overhead and in reps7/) as in
# ../2026-12-05-cpu2-overhead, then the 10 ms+ steps (the language models at
# the bench's quick size, 100 steps, 3 repetitions). Usage: matrix.sh
# [short|long|all] [LABEL]
set -x
cd "$(dirname "$0")/../../.."
KH=${KH:-keras-hybrid}
R=benchmarks/results/2026-12-05-cpu2-overhead-2
WHAT=${1:-all}
LABEL=${2:-default}
REPS=${REPS:-15}
if [ "$WHAT" != long ]; then
for spe in 1 10; do
  for task in mnist1d-mlp mnist1d-cnn; do
    $KH overhead --config default --task $task --steps 400 --repetitions $REPS --steps-per-execution $spe --out $R/$LABEL/tf-$task-spe$spe 2>&1 | grep -v "^wrote"
  done
  $KH overhead --config default --backend jax --task mnist1d-mlp --steps 400 --repetitions $REPS --steps-per-execution $spe --out $R/$LABEL/jax-mnist1d-mlp-spe$spe 2>&1 | grep -v "^wrote"
done
$KH overhead --config default --backend torch --task mnist1d-mlp --steps 400 --repetitions $REPS --out $R/$LABEL/torch-mnist1d-mlp-spe1 2>&1 | grep -v "^wrote"
fi
if [ "$WHAT" != short ]; then
for backend in tensorflow jax torch; do
  $KH overhead --config default --backend $backend --task stdlib-lm --quick --steps 100 --repetitions 3 --out $R/$LABEL/$backend-stdlib-lm 2>&1 | grep -v "^wrote"
done
$KH overhead --config default --backend tensorflow --task stdlib-gpt --quick --steps 100 --repetitions 3 --out $R/$LABEL/tensorflow-stdlib-gpt 2>&1 | grep -v "^wrote"
fi
