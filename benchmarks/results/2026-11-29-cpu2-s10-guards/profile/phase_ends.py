import os, time
import numpy as np, keras
import keras_hybrid as kh
from keras_hybrid import runner as R
from keras_hybrid import cycle as CY
from keras_hybrid import recovery
from keras_hybrid import shadow
from keras_hybrid.bench import overhead as ov
from keras_hybrid.bench.arms import compile_model, resolve_task
task=resolve_task({"task":os.environ.get("TASK","mnist1d-mlp"),"quick":True,"seed":0})
cfg=kh.HybridConfig.from_dict(dict(kh.HybridConfig.resolve("balanced").to_dict(), enable_prediction=False))
start=ov.window_start(cfg); steps=400; batch=task.batch_size
count=batch*(start+steps); reps=-(-count//len(task.x_train))
x=np.concatenate([task.x_train]*reps)[:count]; y=np.concatenate([task.y_train]*reps)[:count]
hyb=compile_model(kh.HybridModel.wrap(task.build_model(0)),task,task.learning_rate)
acc={}
def add(k,t): a=acc.setdefault(k,[0,0.0]); a[0]+=1; a[1]+=t
orig=CY.PhaseCycle.end_phase
def endp(self):
    kind="quiet" if self.quiet.quiet else str(self.controller.phase)
    t=time.perf_counter(); orig(self); add("end:"+kind,time.perf_counter()-t)
CY.PhaseCycle.end_phase=endp
for cls,name in [(recovery.Recovery,"save_good_point"),(R.HybridRunner,"read_statistics"),(shadow.ShadowScoring,"score_and_predict"),(CY.PhaseCycle,"start_full")]:
    f=getattr(cls,name)
    def w(self,*a,_f=f,_n=name,**k):
        t=time.perf_counter(); r=_f(self,*a,**k); add(_n,time.perf_counter()-t); return r
    setattr(cls,name,w)
import keras_hybrid.trajectory as T
for name in ["finish_phase","close_half"]:
    f=getattr(T.WeightTrajectory,name)
    def w(self,*a,_f=f,_n=name,**k):
        t=time.perf_counter(); r=_f(self,*a,**k); add(_n,time.perf_counter()-t); return r
    setattr(T.WeightTrajectory,name,w)
def fit():
    cb=kh.HybridPredictCallback(cfg)
    hyb.fit(x,y,batch_size=batch,epochs=1,verbose=0,shuffle=False,callbacks=[cb]); return cb
fit(); acc.clear()
for i in range(5): cb=fit()
for k,(c,v) in sorted(acc.items()): print(f"{k:22s} calls/fit {c/5:6.1f}  {v/c*1e3:7.3f} ms/call  {v/5*1e3:7.1f} ms/fit")
print(cb.runner.predictor.__class__.__name__)
