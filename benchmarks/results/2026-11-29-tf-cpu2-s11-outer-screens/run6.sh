while pgrep -f run5.sh >/dev/null; do sleep 5; done
for n in v2m7 v2m9 v2f50; do /work/venv/bin/python screen.py cosine $n configs/$n.yaml 100; done
