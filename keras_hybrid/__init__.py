"""keras_hybrid: predictive hybrid training for Keras 3.

Skips backward passes where a learned dynamics model can predict what they
would have done. See README.md.
"""

from keras_hybrid.dependencies import import_keras

import_keras()  # names the missing extra if the backend is not installed

from keras_hybrid.callback import HybridPredictCallback
from keras_hybrid.checkpoint import CheckpointError
from keras_hybrid.checkpoint import latest_checkpoint
from keras_hybrid.checkpoint import verify_checkpoint
from keras_hybrid.config import CheckpointConfig
from keras_hybrid.config import DivergenceConfig
from keras_hybrid.config import HybridConfig
from keras_hybrid.config import MetricsConfig
from keras_hybrid.config import PredictorConfig
from keras_hybrid.divergence import DivergenceError
from keras_hybrid.divergence import DivergenceLevel
from keras_hybrid.divergence import DivergenceMonitor
from keras_hybrid.divergence import HybridTrainingError
from keras_hybrid.freezing import FreezeSchedule
from keras_hybrid.groups import LayerGroups
from keras_hybrid.model import HybridModel
from keras_hybrid.model import WrappedHybridModel
from keras_hybrid.phases import IllegalTransitionError
from keras_hybrid.phases import Phase
from keras_hybrid.phases import PhaseController
from keras_hybrid.tensorboard import HybridTensorBoard

__version__ = "0.1.0"

__all__ = [
    "CheckpointConfig",
    "CheckpointError",
    "DivergenceConfig",
    "DivergenceError",
    "DivergenceLevel",
    "DivergenceMonitor",
    "HybridConfig",
    "HybridModel",
    "HybridPredictCallback",
    "HybridTensorBoard",
    "HybridTrainingError",
    "IllegalTransitionError",
    "MetricsConfig",
    "FreezeSchedule",
    "LayerGroups",
    "Phase",
    "PhaseController",
    "PredictorConfig",
    "WrappedHybridModel",
    "latest_checkpoint",
    "verify_checkpoint",
]
