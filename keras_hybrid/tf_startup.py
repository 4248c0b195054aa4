"""TensorFlow's start-up lines, kept out of the `keras-hybrid` command's
output.

TensorFlow 2.21 prints a few lines from C++ when it loads (absl's notice,
oneDNN, the CPU instructions it was built for, CUDA drivers not found).
`TF_CPP_MIN_LOG_LEVEL` hides the later ones, but absl writes the first ones
before that level applies. The command (`keras-hybrid ...` or
`python -m keras_hybrid.cli ...`) therefore sets the level to "2" (errors
stay visible) unless the user chose one, and drops those lines from what
the import of Keras writes to standard error; everything else is passed on.
Importing `keras_hybrid` as a library changes neither.
"""

import contextlib
import os
import re
import sys
import tempfile

# Lines TensorFlow (and XLA) print when they load, not about the run.
STARTUP_PATTERNS = tuple(re.compile(p) for p in (
    r"All log messages before absl::InitializeLog\(\) is called",
    r"oneDNN custom operations are on",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* rebuild TensorFlow",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
    r"Could not find cuda drivers on your machine",
    # The GPU build of TensorFlow on a machine without a usable GPU.
    r"failed call to cuInit",
    r"cuda_dnn\.cc|cuda_fft\.cc|cuda_blas\.cc",
))

CLI_MODULE = "keras_hybrid.cli"
CLI_SCRIPT = "keras-hybrid"
# What the command sets `TF_CPP_MIN_LOG_LEVEL` to when the user has not:
# TensorFlow's info and warning lines hidden, its errors shown.
CLI_LOG_LEVEL = "2"


def is_startup_line(line):
    """Whether `line` is one of TensorFlow's start-up lines."""
    return any(p.search(line) for p in STARTUP_PATTERNS)


def _module_run_with_m(argv):
    """The module of `python -m MODULE` in an interpreter command line, or
    `None`."""
    args = iter(argv[1:])
    for arg in args:
        if arg == "-m":
            return next(args, None)
        if arg.startswith("-m"):
            return arg[2:]
        if arg in ("-X", "-W"):
            next(args, None)  # the option's value
        elif arg == "-c" or not arg.startswith("-"):
            return None  # a command or a script: the rest is its arguments
    return None


def running_as_cli():
    """Whether this process is the `keras-hybrid` command (the installed
    script, or `python -m keras_hybrid.cli`)."""
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    for suffix in (".exe", "-script.py"):
        script = script.removesuffix(suffix)
    if script == CLI_SCRIPT:
        return True
    argv = getattr(sys, "orig_argv", [])
    return _module_run_with_m(argv) == CLI_MODULE


def _filters_info_lines(level):
    try:
        return int(level) >= 1
    except (TypeError, ValueError):
        return False


@contextlib.contextmanager
def quiet_cli_startup():
    """In the `keras-hybrid` command, TensorFlow's start-up lines written to
    standard error inside this block are dropped (the rest is written out
    when the block ends), and `TF_CPP_MIN_LOG_LEVEL` defaults to "2".

    Does nothing outside the command, or when the user's own
    `TF_CPP_MIN_LOG_LEVEL` shows TensorFlow's info lines ("0").
    """
    if not running_as_cli():
        yield
        return
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", CLI_LOG_LEVEL)
    if not _filters_info_lines(level):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if not is_startup_line(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
