#!/usr/bin/env bash
set -u
OUT=${1:-/tmp/ovh2/ba}
BACKENDS=${BACKENDS:-jax torch}
mkdir -p "$OUT"
export TF_CPP_MIN_LOG_LEVEL=3
. /work/venv/bin/activate
for i in 1 2; do
  for b in $BACKENDS; do
    for v in old new; do
      if [ $v = old ]; then dir=/work/wt/before; else dir=/work/main; fi
      echo -n "$v $b $i: "
      (cd $dir && PYTHONPATH=$dir python -m keras_hybrid.cli overhead --backend $b --task mnist1d-mlp --quick --repetitions 5 --steps 200 --out "$OUT/$v-$b-$i" 2>&1 | grep "fit() overhead" | sed 's/.*repetitions)://')
    done
  done
done
