while pgrep -f run4.sh >/dev/null; do sleep 5; done
export TASK=stdlib-lm MID=288
for n in v2k5 v2k6; do /work/venv/bin/python screen.py constant $n configs/$n.yaml 100 101; done
