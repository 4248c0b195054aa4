"""Entry point of a benchmark subprocess."""

import traceback

from keras_hybrid.bench.arms import run_arm
from keras_hybrid.bench.overhead import measure_fit_overhead
from keras_hybrid.bench.profile import profile_task

FUNCTIONS = {
    "run_arm": run_arm,
    "profile_task": profile_task,
    "measure_fit_overhead": measure_fit_overhead,
}


def child_main(connection, function_name, spec):
    """Runs `FUNCTIONS[function_name](spec)` and sends `("ok", result)` or
    `("error", traceback text)` through `connection`."""
    try:
        result = FUNCTIONS[function_name](spec)
        connection.send(("ok", result))
    except BaseException:  # noqa: BLE001 - reported to the parent.
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()
