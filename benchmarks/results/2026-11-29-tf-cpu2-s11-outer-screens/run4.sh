while pgrep -f run3.sh >/dev/null; do sleep 5; done
/work/venv/bin/python screen.py cosine v2 configs/v2.yaml 100 101
/work/venv/bin/python screen.py constant v2 configs/v2.yaml 100
/work/venv/bin/python screen.py cosine u3n configs/u3n.yaml 101
/work/venv/bin/python screen.py constant u3n configs/u3n.yaml 100
export TASK=stdlib-lm MID=288
for n in v2 v2k v2e3; do /work/venv/bin/python screen.py constant $n configs/$n.yaml 100 101; done
for n in v2 v2k; do /work/venv/bin/python screen.py cosine $n configs/$n.yaml 100 101; done
