import os, time
import numpy as np, keras
import keras_hybrid as kh
from keras_hybrid import runner as R
from keras_hybrid import calls as C
from keras_hybrid import cycle as CY
from keras_hybrid.bench import overhead as ov
from keras_hybrid.bench.arms import compile_model, resolve_task
task=resolve_task({"task":"mnist1d-mlp","quick":True,"seed":0})
cfg=kh.HybridConfig.from_dict(dict(kh.HybridConfig.resolve("balanced").to_dict(), enable_prediction=False))
start=ov.window_start(cfg); steps=400; batch=task.batch_size
count=batch*(start+steps); reps=-(-count//len(task.x_train))
x=np.concatenate([task.x_train]*reps)[:count]; y=np.concatenate([task.y_train]*reps)[:count]
hyb=compile_model(kh.HybridModel.wrap(task.build_model(0)),task,task.learning_rate)
acc={}
def wrapm(cls,name):
    f=getattr(cls,name)
    def w(self,*a,**k):
        t=time.perf_counter(); r=f(self,*a,**k); acc[name]=acc.get(name,0)+time.perf_counter()-t; return r
    setattr(cls,name,w)
for cls,n in [(R.HybridRunner,"run"),(C.StepCalls,"full"),(R.HybridRunner,"_after_step"),(R.HybridRunner,"read_statistics"),(CY.PhaseCycle,"end_phase"),(R.HybridRunner,"_decorate")]: wrapm(cls,n)
def fit():
    hyb.fit(x,y,batch_size=batch,epochs=1,verbose=0,shuffle=False,callbacks=[kh.HybridPredictCallback(cfg)])
fit()
class Wrap:
    def __init__(s,f): s.f=f
    def __call__(s,*a):
        t=time.perf_counter(); r=s.f(*a); acc["full_fn"]=acc.get("full_fn",0)+time.perf_counter()-t; return r
hyb._hybrid_compiled.functions[None]["full"]=Wrap(hyb._hybrid_compiled.functions[None]["full"])
acc.clear()
for i in range(5): fit()
n=5*(start+steps)
for k,v in sorted(acc.items()): print(f"{k:18s} {v/n*1e6:8.1f} us/step")
