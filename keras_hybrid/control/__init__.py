"""Phase policy: what the phase cycle chooses online, each choice with its
own state (`get_state` / `set_state`).

- `PhaseControl` (`phase.py`): the PREDICT length (the controller's
  confidence rule, or a bandit), the confidence threshold and the
  correction interval.
- `UCB1`, `LinUCB`, `phase_reward`, `auto_tune_confidence` (`bandit.py`):
  the length bandits and what they learn from.
- `AdaptiveInterval` (`interval.py`): the micro-correction interval.
- `QuietBackoff` (`quiet.py`): quiet FULL phases while prediction does not
  pay.
- `OuterGuard` (`outer_guard.py`): stops the jumps (outer steps) once they
  make the held-out or check-batch loss worse.
"""

from keras_hybrid.control.bandit import LinUCB
from keras_hybrid.control.bandit import UCB1
from keras_hybrid.control.bandit import auto_tune_confidence
from keras_hybrid.control.bandit import phase_reward
from keras_hybrid.control.interval import AdaptiveInterval
from keras_hybrid.control.outer_guard import OuterGuard
from keras_hybrid.control.phase import PhaseControl
from keras_hybrid.control.quiet import QuietBackoff
