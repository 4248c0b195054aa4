while pgrep -f run2.sh >/dev/null; do sleep 5; done
for n in gs_e4 gs_e6 gs_e6g1; do /work/venv/bin/python screen.py cosine $n configs/$n.yaml 100; done
export TASK=stdlib-lm MID=288
for n in ls_e4g1 ls_e6g1 ls_e6u k0 k1 k2 k3 k4; do /work/venv/bin/python screen.py constant $n configs/$n.yaml 100 101; done
