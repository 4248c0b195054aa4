"""Hybrid training with the hybrid's scalars in TensorBoard.

Trains one of the benchmark's tasks (needs `pip install ".[bench]"`; viewing
the logs needs `pip install tensorboard`) with `HybridPredictCallback`,
`HybridTensorBoard` and Keras' own `TensorBoard`, then prints how to look at
the logs.

Run: python examples/tensorboard_logging.py [LOG_DIR] [TASK] [PRESET]
(defaults: logs, stdlib-lm, balanced)
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

import keras_hybrid as kh  # noqa: E402
from keras_hybrid.bench.tasks import get_task  # noqa: E402


def main(log_dir="logs", task_name="stdlib-lm", preset="balanced"):
    task = get_task(task_name)
    model = kh.HybridModel.wrap(task.build_model(seed=0))
    model.compile(optimizer=keras.optimizers.Adam(task.learning_rate),
                  loss=task.loss, metrics=task.metrics)
    callback = kh.HybridPredictCallback(preset)
    model.fit(
        task.x_train, task.y_train, batch_size=task.batch_size,
        epochs=task.epochs, validation_data=(task.x_val, task.y_val),
        verbose=2,
        callbacks=[
            callback,
            kh.HybridTensorBoard(log_dir),
            keras.callbacks.TensorBoard(log_dir),
        ],
    )
    callback.save_report(os.path.join(log_dir, "report.json"))
    print(f"tensorboard --logdir {log_dir}   (the hybrid/ tags)")
    print(f"keras-hybrid report {os.path.join(log_dir, 'report.json')}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
