import os, time, sys
import numpy as np, keras, tensorflow as tf
import keras_hybrid as kh
from keras_hybrid.backends import tensorflow as ktf
from keras_hybrid.backends import common
from keras_hybrid.bench import overhead as ov
from keras_hybrid.bench.arms import compile_model, resolve_task
V=os.environ.get("V","")
if "noguard" in V:
    ktf._guarded_apply=lambda opt,g,v,f: opt.apply_gradients(zip(g,v))
if "nonorm" in V:
    tf.linalg.global_norm=lambda gs: tf.constant(1.0)
if "nosums" in V:
    o=ktf.make_phase_functions
    ktf.make_phase_functions=lambda m,a,d: o(m,[],d)
task=resolve_task({"task":"mnist1d-mlp","quick":True,"seed":0})
cfg=kh.HybridConfig.from_dict(dict(kh.HybridConfig.resolve("balanced").to_dict(), enable_prediction=False))
start=ov.window_start(cfg); steps=400; batch=task.batch_size
count=batch*(start+steps); reps=-(-count//len(task.x_train))
x=np.concatenate([task.x_train]*reps)[:count]; y=np.concatenate([task.y_train]*reps)[:count]
plain=compile_model(task.build_model(0),task,task.learning_rate)
hyb=compile_model(kh.HybridModel.wrap(task.build_model(0)),task,task.learning_rate)
acc={}
def add(k,t): acc.setdefault(k,[]).append(t)
class Wrap:
    def __init__(s,f,k): s.f=f; s.k=k; s.t=0
    def __call__(s,*a):
        t=time.perf_counter(); r=s.f(*a); s.t+=time.perf_counter()-t; return r
def fit(model,h):
    cbs=[]
    if h: cbs.insert(0,kh.HybridPredictCallback(cfg))
    model.fit(x,y,batch_size=batch,epochs=1,verbose=0,shuffle=False,callbacks=cbs)
fit(plain,False); fit(hyb,True)
wh=Wrap(hyb._hybrid_compiled.functions[None]["full"],"H"); hyb._hybrid_compiled.functions[None]["full"]=wh
wp=Wrap(plain.train_function,"P"); plain.train_function=wp
P=[];H=[]
for i in range(8):
    wp.t=0; fit(plain,False); P.append(wp.t)
    wh.t=0; fit(hyb,True); H.append(wh.t)
P=np.array(P);H=np.array(H)
print(f"{V:20s} fn ratio min {H.min()/P.min():.3f} median {np.median(H/P):.3f}  P {P.min()*1000:.0f} ms")
