#!/usr/bin/env bash
# fit() overhead with prediction disabled, every bench task (quick sizes) and backend.
set -u
OUT=${1:-/tmp/ovh/out}
mkdir -p "$OUT"
export TF_CPP_MIN_LOG_LEVEL=3
for b in tensorflow jax torch; do
  keras-hybrid overhead --backend $b --task mnist1d-mlp --quick --repetitions 5 --steps 200 --out "$OUT/$b-mnist1d-mlp"
done
keras-hybrid overhead --backend tensorflow --task mnist1d-cnn --quick --repetitions 3 --steps 200 --out "$OUT/tensorflow-mnist1d-cnn"
for b in tensorflow jax torch; do
  keras-hybrid overhead --backend $b --task stdlib-lm --quick --repetitions 3 --steps 100 --out "$OUT/$b-stdlib-lm"
done
keras-hybrid overhead --backend tensorflow --task stdlib-gpt --quick --repetitions 3 --steps 100 --out "$OUT/tensorflow-stdlib-gpt"
# Steady state of the back-off: a longer window on the 1 ms task.
keras-hybrid overhead --backend tensorflow --task mnist1d-mlp --quick --repetitions 5 --steps 1000 --out "$OUT/tensorflow-mnist1d-mlp-1000"
