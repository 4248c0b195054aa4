while pgrep -f run1.sh >/dev/null; do sleep 5; done
for n in g_u2 g_u5 g_f30u5 g_u3g0 g_f30u10; do /work/venv/bin/python screen.py cosine $n configs/$n.yaml 100; done
