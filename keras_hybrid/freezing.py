"""Freeze and unfreeze layer groups inside one `fit()`.

`FreezeSchedule` says when the bottom groups of a model are frozen (train
only the head first, unfreeze top-down, freeze the bottom k from a step);
`Freezer` carries it out for the hybrid runner: it switches the compiled
train step to the one of the new frozen depth (gradients are taken for the
trainable groups only, so a frozen prefix runs no backward), gives a group
that is unfrozen fresh optimizer slots, and records each switch and the
backward work saved.
"""

import numbers

import keras

from keras_hybrid import optimizer_slots
from keras_hybrid.groups import AUTO_GROUPS
from keras_hybrid.groups import LayerGroups

UNITS = ("steps", "epochs")


class FreezeSchedule:
    """When the bottom layer groups of a model are frozen, inside one `fit()`.

    The model's trainable layers are split into groups, in order from the
    input (see `LayerGroups`); the schedule is a list of events `(at,
    frozen)`: from `at` (a step or an epoch) on, the bottom `frozen` groups
    are frozen and the others train. A negative `frozen` counts from the
    top: `-1` freezes every group but the last (the head). Before the first
    event nothing is frozen. A frozen group keeps its weights and its
    optimizer slots; one that is unfrozen starts with fresh slots, as after
    compiling a new optimizer in Keras. Frozen `BatchNormalization` layers
    run in inference mode (the Keras convention for `trainable=False`).

    Pass it to the callback: `HybridPredictCallback(config,
    freeze=schedule)` (with the `"plain"` preset, the schedule alone runs,
    with no prediction), or as the config's `freeze` entry (`to_config()`).

    Args:
        events: a list of `(at, frozen)` pairs, `at` increasing.
        groups: `"auto"`, a list of layer names (or lists of names) from
            the input, or a function `layer -> key` (see `LayerGroups`).
        num_groups: the number of groups `"auto"` makes.
        unit: `"steps"` or `"epochs"`: what `at` counts.

    Example:

    ```python
    # The Keras transfer-learning recipe in one fit(): the new head alone
    # for 2 epochs, then everything.
    schedule = keras_hybrid.FreezeSchedule.head_first(epochs=2)
    model.fit(x, y, epochs=10, callbacks=[
        keras_hybrid.HybridPredictCallback("plain", freeze=schedule)])
    ```
    """

    def __init__(self, events, groups="auto", num_groups=AUTO_GROUPS,
                 unit="steps", unfreeze_every=None):
        if unit not in UNITS:
            raise ValueError(
                f"`unit` must be one of {UNITS}. Received: unit={unit!r}"
            )
        self.events = _check_events(events)
        self.groups = _check_groups_spec(groups)
        self.num_groups = num_groups
        self.unit = unit
        self.unfreeze_every = unfreeze_every
        if unfreeze_every is not None:
            _check_count("unfreeze_every", unfreeze_every, minimum=1)

    # ---------------------------------------------------- constructors
    @classmethod
    def head_first(cls, steps=None, epochs=None, groups="auto",
                   num_groups=AUTO_GROUPS):
        """Only the head (the top group) trains for `steps` steps (or
        `epochs` epochs), then everything: the Keras guide's two-stage
        transfer-learning recipe (LP-FT) in one run."""
        at, unit = _one_of(steps=steps, epochs=epochs)
        return cls([(0, -1), (at, 0)], groups=groups, num_groups=num_groups,
                   unit=unit)

    @classmethod
    def gradual(cls, every_steps=None, every_epochs=None, groups="auto",
                num_groups=AUTO_GROUPS):
        """Gradual unfreezing (ULMFiT): the head alone first, then one more
        group from the top every `every_steps` steps (or epochs), until
        everything trains."""
        every, unit = _one_of(every_steps=every_steps,
                              every_epochs=every_epochs)
        return cls([(0, -1)], groups=groups, num_groups=num_groups,
                   unit=unit, unfreeze_every=every)

    @classmethod
    def bottom(cls, k, from_step=None, from_epoch=None, groups="auto",
               num_groups=AUTO_GROUPS):
        """Freezes the bottom `k` groups from a step (or an epoch) on; from
        the start if neither is given."""
        if from_step is None and from_epoch is None:
            from_step = 0
        at, unit = _one_of(from_step=from_step, from_epoch=from_epoch)
        _check_count("k", k, minimum=1)
        return cls([(at, k)], groups=groups, num_groups=num_groups,
                   unit=unit)

    # ---------------------------------------------------------- config
    def get_config(self):
        """The schedule as plain data (YAML-safe unless `groups` is a
        function)."""
        return {
            "groups": self.groups if not callable(self.groups) else (
                "function"
            ),
            "num_groups": self.num_groups,
            "unit": self.unit,
            "events": [list(e) for e in self.events],
            "unfreeze_every": self.unfreeze_every,
        }

    @classmethod
    def from_config(cls, config):
        """Builds a schedule from `get_config()` output (a dict)."""
        if isinstance(config, FreezeSchedule):
            return config
        if not isinstance(config, dict):
            raise ValueError(
                "`freeze` must be a FreezeSchedule or a dict. "
                f"Received: freeze={config!r}"
            )
        known = {"groups", "num_groups", "unit", "events", "unfreeze_every"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(
                f"Unknown `freeze` field(s) {unknown}; known: "
                f"{sorted(known)}. Received: freeze={config!r}"
            )
        if config.get("groups") == "function":
            raise ValueError(
                "This schedule's groups were given by a function, which a "
                "config cannot hold: pass the FreezeSchedule again with "
                "`HybridPredictCallback(..., freeze=schedule)`. "
                "Received: freeze.groups='function'"
            )
        if "events" not in config:
            raise ValueError(
                "`freeze` needs `events`: a list of [at, frozen] pairs. "
                f"Received: freeze={config!r}"
            )
        return cls(
            [tuple(e) for e in config["events"]],
            groups=config.get("groups", "auto"),
            num_groups=config.get("num_groups", AUTO_GROUPS),
            unit=config.get("unit", "steps"),
            unfreeze_every=config.get("unfreeze_every"),
        )

    # ------------------------------------------------------- resolving
    def resolve(self, model, steps_per_epoch=None, total_steps=None):
        """The schedule for `model`: its groups and the frozen depth from
        each step on. Raises a `ValueError` for a schedule that cannot run
        on this model and run length.

        Returns:
            `(groups, steps)`: a `LayerGroups` and a list of `(step,
            frozen)` pairs, `step` increasing.
        """
        groups = LayerGroups(model, self.groups, num_groups=self.num_groups)
        n = len(groups)
        if n < 2:
            raise ValueError(
                "A freeze schedule needs at least two layer groups (one to "
                f"freeze, one to train). Received: {n} group "
                f"({groups.names()})"
            )
        scale = 1
        if self.unit == "epochs":
            if not steps_per_epoch:
                raise ValueError(
                    "A schedule in epochs needs the number of steps per "
                    "epoch, which this data does not tell (pass "
                    "`steps_per_epoch` to fit(), or give the schedule in "
                    "steps). Received: unit='epochs'"
                )
            scale = int(steps_per_epoch)
        events = [(at * scale, frozen) for at, frozen in self.events]
        if self.unfreeze_every is not None:
            every = self.unfreeze_every * scale
            start, frozen = events[-1]
            depth = _depth(frozen, n)
            while depth > 0:
                start += every
                depth -= 1
                events.append((start, depth))
        steps = []
        for at, frozen in events:
            depth = _depth(frozen, n)
            if depth >= n or depth < 0:
                raise ValueError(
                    "A freeze schedule may not freeze every trainable "
                    f"weight: the model has {n} groups ({groups.names()}). "
                    f"Received: frozen={frozen!r} at {self.unit[:-1]} "
                    f"{at // scale}"
                )
            if total_steps is not None and at >= total_steps and at > 0:
                raise ValueError(
                    "A freeze event is past the end of the run "
                    f"({total_steps} steps). Received: {self.unit[:-1]} "
                    f"{at // scale}"
                )
            steps.append((int(at), depth))
        return groups, steps

    def __repr__(self):
        return (
            f"FreezeSchedule(events={self.events!r}, groups={self.groups!r}, "
            f"unit={self.unit!r}"
            + (f", unfreeze_every={self.unfreeze_every}"
               if self.unfreeze_every else "") + ")"
        )


class Freezer:
    """Carries out a `FreezeSchedule` for a hybrid runner.

    It owns the frozen depth (the number of bottom groups frozen): at each
    step it tells whether the depth changes, switches the model's train
    step to that depth, resets the optimizer slots of groups that are
    unfrozen, and accounts for the backward work.

    Args:
        schedule: a `FreezeSchedule`, or `None` for a freezer driven by
            decisions (the layer-wise check) over `groups`.
        model: the `HybridModel` being trained (built).
        steps_per_epoch: the run's steps per epoch (`None` if unknown).
        total_steps: the run's length in steps (`None` if unknown).
        groups: the `LayerGroups` of a freezer without a schedule.
    """

    def __init__(self, schedule, model, steps_per_epoch=None,
                 total_steps=None, groups=None):
        self.schedule = schedule
        self.model = model
        if schedule is None:
            # Driven by decisions (`HybridRunner.switch_depth`), not steps.
            self.groups, self.steps = groups, []
        else:
            self.groups, self.steps = schedule.resolve(
                model, steps_per_epoch, total_steps
            )
        self.depth = 0
        self.events = []
        # Backward work of the steps before the newest switch, in full
        # backward passes, and the backward-pass count at that switch.
        self.work_before = 0.0
        self.backward_at_switch = 0
        self._shares = {}

    def depth_at(self, step):
        """The frozen depth the schedule gives `step`."""
        depth = 0
        for at, frozen in self.steps:
            if step >= at:
                depth = frozen
        return depth

    def share(self, depth=None):
        """A step's backward work at `depth` (default: now), as a share of
        a step that trains every group."""
        depth = self.depth if depth is None else depth
        if depth not in self._shares:
            self._shares[depth] = self.groups.backward_work(depth)
        return self._shares[depth]

    def switch(self, step, depth, backward_passes):
        """Records a switch to `depth` at `step` and applies it to the
        model (its train step and the optimizer slots of unfrozen
        groups)."""
        self.work_before += (
            backward_passes - self.backward_at_switch
        ) * self.share()
        self.backward_at_switch = backward_passes
        unfrozen = range(depth, self.depth) if depth < self.depth else ()
        for g in unfrozen:
            optimizer_slots.reset(
                self.model.optimizer,
                [self.model.trainable_variables[i]
                 for i in self.groups.variable_indices[g]],
            )
        self.depth = depth
        self.apply()
        self.events.append({
            "step": int(step), "frozen_groups": int(depth),
            "backward_work": round(self.share(depth), 6),
        })

    def apply(self):
        """Puts the current depth into effect on the model."""
        set_live(self.model, self.groups, self.depth)

    def release(self):
        """Leaves the model as the user set it (nothing frozen)."""
        set_live(self.model, self.groups, 0)

    def hold_frozen(self, outcome, variables):
        """A predictor's `PhaseOutcome` with the frozen weights held where
        they are: their jump targets and start are their current values,
        their per-step change zero.

        Args:
            outcome: the predictor's `PhaseOutcome`.
            variables: the model's trainable variables (synced).
        """
        mask = self.groups.live_mask(self.depth)
        if mask is None:
            return outcome
        frozen = [i for i, live in enumerate(mask) if not live]
        # Copies: on JAX a variable's own array is donated by the next step.
        held = {i: keras.ops.copy(variables[i].value) for i in frozen}
        targets = outcome.targets

        def held_targets(scale):
            return _replace(targets(scale), held)

        per_step = _replace(outcome.per_step_delta, {
            i: keras.ops.zeros_like(held[i]) for i in frozen
        })
        # `apply` would move the frozen weights too: the jump check
        # assigns the held targets instead.
        return outcome.replace(
            targets=held_targets, per_step_delta=per_step,
            start=_replace(outcome.start, held), apply=None,
        )

    def work(self, backward_passes):
        """The backward work done so far, in full backward passes."""
        return self.work_before + (
            backward_passes - self.backward_at_switch
        ) * self.share()

    def summary(self, backward_passes):
        """The report's entry: groups, switches and backward work saved."""
        work = self.work(backward_passes)
        return {
            "groups": self.groups.names(),
            "events": list(self.events),
            "backward_work": round(work, 3),
            "backward_work_saved_pct": round(
                100.0 * (1.0 - work / backward_passes), 2
            ) if backward_passes else 0.0,
        }

    def get_state(self):
        return {"depth": self.depth, "events": list(self.events),
                "work_before": self.work_before,
                "backward_at_switch": self.backward_at_switch}

    def set_state(self, state):
        self.depth = int(state["depth"])
        self.events = list(state["events"])
        self.work_before = float(state["work_before"])
        self.backward_at_switch = int(state["backward_at_switch"])
        self.apply()


def _replace(values, replacements):
    values = list(values)
    for i, value in replacements.items():
        values[i] = value
    return values


def set_live(model, groups, depth):
    """Makes the model's train step train all but the bottom `depth`
    groups (read when a step is traced: one compiled step per depth) and
    puts the frozen groups' `BatchNormalization` layers in inference
    mode."""
    model._hybrid_live = groups.live_mask(depth)
    for g, layers in enumerate(groups.layers):
        for layer in layers:
            _set_inference(layer, g < depth)


def _set_inference(layer, frozen):
    if not isinstance(layer, keras.layers.BatchNormalization):
        return
    own = layer.__dict__.get("_hybrid_own_call")
    if frozen and own is None:
        original = layer.call

        def call(inputs, training=None, mask=None):
            del training
            return original(inputs, training=False, mask=mask)

        layer.__dict__["_hybrid_own_call"] = original
        object.__setattr__(layer, "call", call)
    elif not frozen and own is not None:
        del layer.__dict__["call"]
        del layer.__dict__["_hybrid_own_call"]


def _depth(frozen, n):
    return n + frozen if frozen < 0 else frozen


def _one_of(**kwargs):
    given = {k: v for k, v in kwargs.items() if v is not None}
    if len(given) != 1:
        raise ValueError(
            f"Give exactly one of {sorted(kwargs)}. Received: "
            + ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        )
    (name, value), = given.items()
    _check_count(name, value, minimum=0 if name.startswith("from") else 1)
    return value, "epochs" if "epoch" in name else "steps"


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (
        value < minimum
    ):
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}. "
            f"Received: {name}={value!r}"
        )


def _check_events(events):
    if not isinstance(events, (list, tuple)) or not events:
        raise ValueError(
            "`events` must be a non-empty list of (at, frozen) pairs. "
            f"Received: events={events!r}"
        )
    checked = []
    for event in events:
        if not isinstance(event, (list, tuple)) or len(event) != 2:
            raise ValueError(
                "Each event must be an (at, frozen) pair. "
                f"Received: {event!r} in events={events!r}"
            )
        at, frozen = event
        _check_count("at", at, minimum=0)
        if isinstance(frozen, bool) or not isinstance(
            frozen, numbers.Integral
        ):
            raise ValueError(
                "`frozen` must be an integer (the number of bottom groups "
                "frozen; negative counts from the top). "
                f"Received: frozen={frozen!r} in events={events!r}"
            )
        if checked and at <= checked[-1][0]:
            raise ValueError(
                "Events must be in increasing order of `at`. "
                f"Received: events={events!r}"
            )
        checked.append((int(at), int(frozen)))
    return checked


def _check_groups_spec(groups):
    if groups == "auto" or callable(groups) or isinstance(
        groups, (list, tuple)
    ):
        return list(groups) if isinstance(groups, tuple) else groups
    raise ValueError(
        "`groups` must be 'auto', a list of layer names (or of lists of "
        f"names), or a function layer -> key. Received: groups={groups!r}"
    )
