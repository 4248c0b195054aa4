#!/usr/bin/env bash
# Before/after on the 1 ms task: old = 5688b25, new = main; alternated.
set -u
OUT=${1:-/tmp/ovh/ba}
mkdir -p "$OUT"
export TF_CPP_MIN_LOG_LEVEL=3
. /work/venv/bin/activate
for i in 1 2; do
  for b in tensorflow jax torch; do
    for v in old new; do
      if [ $v = old ]; then dir=/work/wt/old; else dir=/work/main; fi
      (cd $dir && PYTHONPATH=$dir keras-hybrid overhead --backend $b --task mnist1d-mlp --quick --repetitions 5 --steps 200 --out "$OUT/$v-$b-$i" 2>&1 | grep "fit() overhead")
    done
  done
done
