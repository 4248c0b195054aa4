set -x
KH_RESTART=0 /work/venv/bin/python screen.py cosine g_outer_norestart configs/g_outer.yaml 100
for n in g_outer g_uncond g_f30 g_f30u g_u3 g_f50u; do /work/venv/bin/python screen.py cosine $n configs/$n.yaml 100; done
