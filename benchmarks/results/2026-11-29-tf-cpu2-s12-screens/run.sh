#!/bin/bash
# The screens of this folder, in the order they ran (one at a time).
# screen.py is ../2026-11-29-tf-cpu2-s11-outer-screens/screen.py (PRED picks
# the predictor type; default nesterov); the configs are the `outer` preset
# with the predictor settings in their names changed (configs/).
PY=/work/venv/bin/python
S=../2026-11-29-tf-cpu2-s11-outer-screens/screen.py
for n in m9e1 m9e05 m8e05; do
  TASK=stdlib-gpt MID=1152 $PY $S cosine $n configs/$n.yaml 100
done
for n in m9e1 m9e05; do
  TASK=stdlib-lm MID=288 $PY $S constant $n configs/$n.yaml 100 101
done
PRED=holt TASK=stdlib-gpt MID=1152 $PY $S constant h1 configs/h1.yaml 100
# Keras' weight average (use_ema), stdlib-gpt, constant rate, seed 100:
for a in "baseline 0" "baseline 0.99" "hybrid 0.99" "hybrid 0.998" "wsd 0 1536"; do
  $PY average_probe.py stdlib-gpt constant 100 $a
done
