"""JSON-safe snapshots of the runner's small Python objects.

The controller, training state, predictor, monitor and statistics hold only
numbers, strings, lists, deques, counters, enums and small dataclasses.
`object_state` turns the listed attributes of such an object into plain JSON
values with type tags where JSON has no type; `set_object_state` puts them
back. Lists of tensors travel as numpy arrays (`to_numpy`, `to_tensors`),
written by `keras_hybrid.checkpoint`.

`clean_json` is the lossy one-way form of reports and bench results: strict
JSON with non-finite floats as `null`.
"""

import collections
import dataclasses
import enum
import math

import keras
import numpy as np

from keras_hybrid.phases import Phase
from keras_hybrid.phases import PhaseRecord


def encode(value):
    """Encodes one value as JSON-safe data (non-finite floats tagged)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Phase):
        return {"__phase__": int(value)}
    if isinstance(value, enum.Enum):
        return {"__enum__": value.value}
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, PhaseRecord):
        return {"__record__": {k: encode(v) for k, v in
                               dataclasses.asdict(value).items()}}
    if isinstance(value, collections.deque):
        return {"__deque__": [encode(v) for v in value],
                "maxlen": value.maxlen}
    if isinstance(value, collections.Counter):
        return {"__counter__": {str(k): encode(v) for k, v in value.items()}}
    if isinstance(value, collections.defaultdict):
        return {"__listdict__": {str(k): encode(v) for k, v in value.items()}}
    if isinstance(value, dict):
        return {"__dict__": {str(k): encode(v) for k, v in value.items()}}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, (list, np.ndarray)):
        return [encode(v) for v in list(value)]
    raise TypeError(
        f"Cannot checkpoint a value of type {type(value).__name__}. "
        f"Received: {value!r}"
    )


def decode(value):
    """Inverse of `encode`."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__phase__" in value:
        return Phase(value["__phase__"])
    if "__float__" in value:
        return float(value["__float__"])
    if "__record__" in value:
        return PhaseRecord(**{k: decode(v)
                              for k, v in value["__record__"].items()})
    if "__deque__" in value:
        return collections.deque([decode(v) for v in value["__deque__"]],
                                 maxlen=value["maxlen"])
    if "__counter__" in value:
        return collections.Counter({k: decode(v) for k, v in
                                    value["__counter__"].items()})
    if "__listdict__" in value:
        out = collections.defaultdict(list)
        out.update({k: decode(v) for k, v in value["__listdict__"].items()})
        return out
    if "__dict__" in value:
        return {k: decode(v) for k, v in value["__dict__"].items()}
    if "__tuple__" in value:
        return tuple(decode(v) for v in value["__tuple__"])
    raise ValueError(f"Unknown encoded value. Received: {value!r}")


def object_state(obj, names):
    """The named attributes of `obj`, encoded."""
    return {name: encode(getattr(obj, name)) for name in names}


def set_object_state(obj, state, names):
    """Sets the named attributes of `obj` from `object_state` output.

    Raises:
        ValueError: if a name is missing from `state`.
    """
    missing = [n for n in names if n not in state]
    if missing:
        raise ValueError(
            f"Checkpoint state of {type(obj).__name__} lacks {missing}. "
            f"Received keys: {sorted(state)}"
        )
    for name in names:
        setattr(obj, name, decode(state[name]))


def to_numpy(values):
    """A list of tensors as numpy arrays (`None` stays `None`)."""
    return None if values is None else [
        keras.ops.convert_to_numpy(v) for v in values
    ]


def to_tensors(values):
    """Inverse of `to_numpy`."""
    return None if values is None else [
        keras.ops.convert_to_tensor(v) for v in values
    ]


def clean_json(value):
    """Replaces non-finite floats by `None` and numpy scalars by Python ones,
    recursively, so that the result is strict JSON."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
