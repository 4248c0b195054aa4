"""The `keras-hybrid` command line.

```
keras-hybrid bench [--task NAME|all] [--seeds N] [--config PRESET|PATH]
                   [--quick] [--out DIR] [--backend tensorflow|jax|torch]
                   [--schedule constant|cosine] [--predictors TYPE,...]
                   [--first-seed N] [--weight-average MOMENTUM]
                   [--overhead-repetitions N] [--profile]
keras-hybrid summary PATH/bench.json|PATH/headroom.json
keras-hybrid headroom [--task NAME|all] [--seeds N] [--fractions F,...]
                      [--quick] [--out DIR] [--backend tensorflow|jax|torch]
                      [--schedule constant|cosine]
keras-hybrid report PATH/report.json [--out PATH.png]
keras-hybrid freeze-oracle [--task ft-docs,ft-topics] [--out DIR] [--quick]
                           [--cache-dir DIR] [--seeds S,...] [--blocks K,...]
                           [--freeze-at T,...] [--lr-grid LR,...]
keras-hybrid overhead [--task NAME|all] [--config PRESET|PATH] [--quick]
                      [--out DIR] [--backend tensorflow|jax|torch]
                      [--repetitions N] [--steps N]
                      [--jit-compile auto|true|false] [--steps-per-execution N]
                      [--no-keras-guard]
```

Also `python -m keras_hybrid.cli bench ...`.
"""

import argparse
import importlib.util
import os
import sys

BACKENDS = ("tensorflow", "jax", "torch")
# The package each backend needs in the arm subprocesses.
BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
QUICK_TASK = "mnist1d-mlp"
QUICK_SEEDS = 1
FULL_SEEDS = 3


def build_parser():
    """The argument parser of `keras-hybrid`."""
    parser = argparse.ArgumentParser(
        prog="keras-hybrid",
        description="Predictive hybrid training for Keras 3.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    bench = commands.add_parser(
        "bench",
        help="run the side-by-side benchmark (baseline, hybrid, "
        "equal-budget, truncated)",
        description="Runs baseline, hybrid and equal-budget arms side by "
        "side (and reads the baseline at each hybrid's backward count: the "
        "truncated reference), prints a table and writes bench.json and one "
        "PNG per task.",
    )
    _add_run_arguments(
        bench, out="bench_out",
        quick_help="quick task sizes, one task (mnist1d-mlp) and one seed: "
        "under 3 minutes on 2 CPU cores",
    )
    _add_config_argument(bench)
    bench.add_argument(
        "--predictors", default=None,
        help="comma-separated predictor types, one hybrid arm (and one "
        "equal-budget arm) each (default: all of them; with --quick only the "
        "config's predictor.type)",
    )
    bench.add_argument(
        "--first-seed", type=_non_negative_int, default=0,
        help="first seed (default: 0); tune on seeds you do not report",
    )
    bench.add_argument(
        "--weight-average", type=float, default=None, metavar="MOMENTUM",
        help="every arm's optimizer keeps Keras' moving average of the "
        "weights (use_ema) with this momentum, e.g. 0.99, and fit() ends on "
        "it (default: off)",
    )
    bench.add_argument(
        "--overhead-repetitions", type=_non_negative_int, default=3,
        help="alternated repetitions of plain fit() against the hybrid with "
        "prediction disabled, per task (the fit() overhead; default 3; 0 "
        "skips it)",
    )
    bench.add_argument(
        "--profile", action="store_true",
        help="also print the step-time checks against the project's "
        "internal targets (hybrid FULL step / plain, jump skip step / FULL "
        "step, predictor overhead); bench.json holds them either way",
    )
    bench.set_defaults(command_parser=bench)
    summary = commands.add_parser(
        "summary",
        help="per-predictor table of a bench.json, or the table of a "
        "headroom.json (Markdown)",
        description="Prints one Markdown row per task and predictor of a "
        "bench.json (ratios to the baseline, equal-budget and truncated "
        "references, shadow-check figures) and the tasks where a hybrid arm "
        "beats each reference beyond the seed spread; for a headroom.json, "
        "one row per task and fraction.",
    )
    summary.add_argument(
        "path", help="a bench.json written by bench or a headroom.json "
        "written by headroom")
    summary.set_defaults(command_parser=summary)
    headroom = commands.add_parser(
        "headroom",
        help="what a perfect predictor could gain: the baseline's final loss "
        "against the equal-budget, truncated and wsd references at fewer "
        "backward passes",
        description="A perfect predictor ends where the baseline ends, with "
        "a fraction of its backward passes. Runs the baseline and one "
        "equal-budget and one wsd arm per fraction side by side, prints "
        "whether that "
        "beats each same-budget reference beyond the seed spread, and "
        "writes headroom.json.",
    )
    _add_run_arguments(
        headroom, out="headroom_out",
        quick_help="quick task sizes, one task (mnist1d-mlp) and one seed",
    )
    headroom.add_argument(
        "--fractions", default=None,
        help="comma-separated shares of the baseline's backward passes the "
        "perfect predictor runs, each in (0, 1) (default: 0.5,0.75,0.9)",
    )
    headroom.set_defaults(command_parser=headroom)
    overhead = commands.add_parser(
        "overhead",
        help="what the callback costs when it predicts nothing: plain fit() "
        "against the hybrid with prediction disabled, per task",
        description="Times plain fit() against fit() with a "
        "HybridPredictCallback whose prediction is disabled and against "
        "plain fit() with Keras' own finite check, alternated in one "
        "process over the same batches, per task; prints the ratios, the "
        "verdict against the bar (at most 1.02x plain on steps of 10 ms or "
        "more, Keras' finite check + 0.05 on shorter ones) and writes "
        "overhead.json.",
    )
    _add_run_arguments(
        overhead, out="overhead_out",
        quick_help="quick task sizes, one task (mnist1d-mlp)", seeds=False,
    )
    _add_config_argument(overhead, default="default")
    overhead.add_argument("--repetitions", type=_positive_int, default=3,
                          help="alternated repetitions (default: 3)")
    overhead.add_argument("--steps", type=_positive_int, default=None,
                          help="timed steps per repetition (default: 200; "
                          "60 with --quick)")
    overhead.add_argument(
        "--jit-compile", choices=("auto", "true", "false"), default="auto",
        help="compile() jit_compile of both arms (XLA on TensorFlow and "
        "JAX; default: auto, Keras' choice: no XLA on a TensorFlow CPU)",
    )
    overhead.add_argument(
        "--steps-per-execution", type=_positive_int, default=1,
        help="compile() steps_per_execution of both arms: batches per "
        "train-function call (default: 1; PyTorch supports only 1)",
    )
    overhead.add_argument(
        "--no-keras-guard", dest="keras_guard", action="store_false",
        help="leave out the third arm, plain fit() with Keras' own finite "
        "check (LossScaleOptimizer, scale 1), the reference on short steps",
    )
    overhead.set_defaults(command_parser=overhead)
    from keras_hybrid.bench import freeze_oracle

    freeze_oracle.add_subcommand(commands)
    report = commands.add_parser(
        "report",
        help="summarize a training report (from "
        "HybridPredictCallback.save_report) and draw its timeline as a PNG",
        description="Prints a short summary of a training report and writes "
        "a PNG timeline: the training loss, the phases shaded, accepted and "
        "rejected jumps, and interventions.",
    )
    report.add_argument("path", help="a report.json")
    report.add_argument(
        "--out", default=None,
        help="the PNG to write (default: the report's path with .png)",
    )
    report.set_defaults(command_parser=report)
    return parser


def _add_config_argument(parser, default="balanced"):
    parser.add_argument(
        "--config", default=default,
        help=f"hybrid config: preset name or YAML path (default: {default})",
    )


def _add_run_arguments(parser, out, quick_help, seeds=True):
    """`--task`, `--seeds` (unless `seeds` is False), `--quick`, `--out`,
    `--backend` and `--schedule` (the arguments `_resolve_common_args`
    checks)."""
    parser.add_argument(
        "--task", default=None,
        help="task name or 'all' (default: all; mnist1d-mlp with --quick)",
    )
    if seeds:
        parser.add_argument(
            "--seeds", type=_positive_int, default=None,
            help=f"number of seeds (default: {FULL_SEEDS}; {QUICK_SEEDS} "
            "with --quick)",
        )
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", default=out,
                        help=f"output directory (default: {out})")
    parser.add_argument(
        "--backend", choices=BACKENDS, default=None,
        help="Keras backend of the arm processes (default: KERAS_BACKEND, "
        "else tensorflow)",
    )
    parser.add_argument(
        "--schedule", default="constant",
        help="learning-rate recipe of every arm: 'constant' (the task's "
        "warmup, then its peak rate) or 'cosine' (warmup, then a cosine "
        "decay to 0); equal-budget compresses it (default: constant)",
    )


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"must be a non-negative integer. Received: {text!r}"
        )
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer. Received: {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer. Received: {text!r}"
        )
    return value


def resolve_bench_args(parser, args):
    """Validates `bench` arguments and fills the `--quick` defaults.

    Returns:
        A dict of keyword arguments for `run_benchmark`. Invalid arguments
        end the program through `parser.error` (exit status 2).
    """
    from keras_hybrid.config import HybridConfig

    common = _resolve_common_args(parser, args)
    try:
        config = HybridConfig.resolve(args.config)
    except ValueError as e:
        parser.error(f"invalid --config: {e}")
    from keras_hybrid import dynamics

    if args.predictors is not None:
        predictors = [p.strip() for p in args.predictors.split(",")]
        unknown = [p for p in predictors if p not in dynamics.AVAILABLE]
        if unknown or not all(predictors):
            parser.error(
                f"unknown predictor type; expected a comma-separated list of "
                f"{list(dynamics.AVAILABLE)}. "
                f"Received: --predictors={args.predictors!r}"
            )
    elif args.quick:
        predictors = [config.predictor.type]
    else:
        predictors = list(dynamics.AVAILABLE)
    return {**common, "config": args.config, "predictors": predictors,
            "overhead_repetitions": args.overhead_repetitions,
            "first_seed": args.first_seed,
            "weight_average": _weight_average(parser, args.weight_average),
            "profile": args.profile}


def _weight_average(parser, value):
    from keras_hybrid.weight_average import check_weight_average

    try:
        return check_weight_average(value)
    except ValueError:
        parser.error("--weight-average must be a momentum in (0, 1), e.g. "
                     f"0.99. Received: --weight-average={value!r}")


def resolve_headroom_args(parser, args):
    """Validates `headroom` arguments and fills the `--quick` defaults.

    Returns:
        A dict of keyword arguments for
        `keras_hybrid.bench.headroom.run_headroom`. Invalid arguments end the
        program through `parser.error` (exit status 2).
    """
    from keras_hybrid.bench import headroom

    common = _resolve_common_args(parser, args)
    fractions = headroom.DEFAULT_FRACTIONS
    if args.fractions is not None:
        try:
            fractions = headroom.check_fractions(
                [float(f) for f in args.fractions.split(",")]
            )
        except ValueError:
            parser.error(
                "--fractions must be a comma-separated list of numbers in "
                f"(0, 1). Received: --fractions={args.fractions!r}"
            )
    return {**common, "fractions": list(fractions)}


def resolve_overhead_args(parser, args):
    """Validates `overhead` arguments.

    Returns:
        A dict of keyword arguments for
        `keras_hybrid.bench.overhead_run.run_overhead`.
    """
    from keras_hybrid.config import HybridConfig

    common = _resolve_common_args(parser, args)
    del common["seeds"], common["schedule"]
    try:
        HybridConfig.resolve(args.config)
    except ValueError as e:
        parser.error(f"invalid --config: {e}")
    jit_compile = {"auto": "auto", "true": True, "false": False}[
        args.jit_compile
    ]
    return {**common, "config": args.config,
            "repetitions": args.repetitions, "steps": args.steps,
            "jit_compile": jit_compile,
            "steps_per_execution": args.steps_per_execution,
            "keras_guard": args.keras_guard}


def _resolve_common_args(parser, args):
    """`--task`, `--seeds`, `--quick`, `--out`, `--backend` and
    `--schedule`, validated."""
    from keras_hybrid.bench.schedules import SCHEDULES
    from keras_hybrid.bench.tasks import KNOWN_TASK_NAMES

    if args.schedule not in SCHEDULES:
        parser.error(
            f"unknown schedule; expected one of {list(SCHEDULES)}. "
            f"Received: --schedule={args.schedule!r}"
        )
    task = args.task or (QUICK_TASK if args.quick else "all")
    if task != "all" and task not in KNOWN_TASK_NAMES:
        parser.error(
            "unknown task; expected 'all' or one of "
            f"{list(KNOWN_TASK_NAMES)}. "
            f"Received: --task={task!r}"
        )
    seeds = getattr(args, "seeds", None) or (
        QUICK_SEEDS if args.quick else FULL_SEEDS
    )
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(
            "--out must be a directory. "
            f"Received: --out={args.out!r} (an existing file)"
        )
    backend = args.backend
    if backend is not None and importlib.util.find_spec(
        BACKEND_PACKAGES[backend]
    ) is None:
        parser.error(
            f"--backend {backend} needs the `{BACKEND_PACKAGES[backend]}` "
            f"package, which is not installed. Received: --backend={backend}"
        )
    return {
        "tasks": task,
        "seeds": seeds,
        "quick": bool(args.quick),
        "out_dir": args.out,
        "backend": backend,
        "schedule": args.schedule,
    }


def _run_arms(command, function, kwargs):
    """Runs `function(**kwargs)`; returns the exit status (1 when an arm
    failed in its subprocess)."""
    try:
        function(**kwargs)
    except RuntimeError as e:
        # An arm failed in its subprocess; the message holds its traceback.
        print(f"keras-hybrid {command}: error: {e}", file=sys.stderr)
        return 1
    return 0


def _report(args):
    """`keras-hybrid report`: prints the summary, writes the PNG."""
    from keras_hybrid import report_plot

    try:
        report = report_plot.load_report(args.path)
    except ValueError as e:
        args.command_parser.error(str(e))
    print(report_plot.summary_text(report))
    out = args.out or os.path.splitext(args.path)[0] + ".png"
    try:
        report_plot.plot_report(report, out)
    except ImportError as e:
        print(f"keras-hybrid report: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


def main(argv=None):
    """Runs `keras-hybrid` with `argv` (default: `sys.argv[1:]`).

    Returns:
        The exit status (0 on success).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        kwargs = resolve_bench_args(args.command_parser, args)
        from keras_hybrid.bench.harness import run_benchmark

        return _run_arms("bench", run_benchmark, kwargs)
    elif args.command == "headroom":
        kwargs = resolve_headroom_args(args.command_parser, args)
        from keras_hybrid.bench.headroom import run_headroom

        return _run_arms("headroom", run_headroom, kwargs)
    elif args.command == "report":
        return _report(args)
    elif args.command == "freeze-oracle":
        from keras_hybrid.bench import freeze_oracle

        return freeze_oracle.main(args)
    elif args.command == "overhead":
        kwargs = resolve_overhead_args(args.command_parser, args)
        from keras_hybrid.bench.overhead_run import run_overhead

        return _run_arms("overhead", run_overhead, kwargs)
    elif args.command == "summary":
        from keras_hybrid.bench import summary

        try:
            result = summary.load(args.path)
        except ValueError as e:
            args.command_parser.error(str(e))
        if result.get("kind") == "headroom":
            from keras_hybrid.bench import headroom

            print(headroom.markdown_table(result))
        else:
            print(summary.markdown_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
