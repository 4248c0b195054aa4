#!/usr/bin/env bash
# XLA on TensorFlow's CPU, old (cond guard) vs new (select guard), alternated.
set -u
. /work/venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL=3
for i in 1 2; do
  for v in old new; do
    if [ $v = old ]; then dir=/work/wt/before; else dir=/work/main; fi
    echo -n "$v xla $i: "
    (cd $dir && PYTHONPATH=$dir JIT=1 REPS=7 python /tmp/prof/varjit.py 2>&1 | grep "min-ratio")
  done
done
