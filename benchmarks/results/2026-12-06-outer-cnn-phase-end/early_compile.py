"""Phase functions that compile at their second call on a long run.

`LazilyCompiled` runs a phase-boundary function eagerly until its eager
calls have cost 30 ms (`threshold`, the rule before), or, knowing how many
FULL phase ends are left in the `fit()`, compiles it as soon as the calls
to come would cost more than its trace (`early`, the package now). Per
function, the time of its eager calls, of the call that compiles it and of
its compiled calls in one `outer` `fit()` on `cnn16` (TensorFlow), each arm
in a fresh process, alternated (`phase_functions.py` measures the same way).

Usage: python early_compile.py [--repetitions 5] [--out early_compile.json]
"""

import alternate
import phase_functions

ARMS = ["early", "threshold"]


def _patch(arm):
    from keras_hybrid.backends import LazilyCompiled

    if arm == "threshold":
        LazilyCompiled.expect = classmethod(lambda cls, calls_ahead=None:
                                            None)


def child(arm):
    phase_functions.child(arm, patch=_patch)


if __name__ == "__main__":
    alternate.main(__file__, child, ARMS, 5, phase_functions.report)
