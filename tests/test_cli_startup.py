"""The `keras-hybrid` command keeps TensorFlow's start-up lines out of its
output; importing the library changes nothing."""

import importlib.util
import os
import subprocess
import sys

import pytest

from keras_hybrid import tf_startup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STARTUP_LINE = ("I0000 00:00:1796401759.734263   16826 port.cc:153] oneDNN "
                "custom operations are on.")


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="needs TensorFlow")
def test_command_prints_no_tensorflow_startup_lines_but_its_errors():
    env = {k: v for k, v in os.environ.items()
           if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "tensorflow"
    missing = os.path.join(ROOT, "no-such-dir", "bench.json")
    result = subprocess.run(
        [sys.executable, "-m", "keras_hybrid.cli", "summary", missing],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith("usage: keras-hybrid summary"), result.stderr
    assert "keras-hybrid summary: error: Could not read a bench.json" in (
        result.stderr)
    for line in lines:
        assert not tf_startup.is_startup_line(line), result.stderr
        assert "absl" not in line and "cpu_feature_guard" not in line


@pytest.mark.parametrize("argv0,orig_argv,expected", [
    ("/venv/bin/keras-hybrid", ["python", "/venv/bin/keras-hybrid"], True),
    ("keras-hybrid.exe", ["keras-hybrid.exe"], True),
    ("-m", ["python", "-m", "keras_hybrid.cli", "bench"], True),
    ("-m", ["python", "-X", "dev", "-mkeras_hybrid.cli"], True),
    ("-m", ["python", "-m", "pytest", "-m", "keras_hybrid.cli"], False),
    ("-c", ["python", "-c", "import keras_hybrid"], False),
    ("train.py", ["python", "train.py", "-m", "keras_hybrid.cli"], False),
])
def test_running_as_cli(monkeypatch, argv0, orig_argv, expected):
    monkeypatch.setattr(sys, "argv", [argv0])
    monkeypatch.setattr(sys, "orig_argv", orig_argv, raising=False)
    assert tf_startup.running_as_cli() is expected


def _write_to_fd2(*lines):
    for line in lines:
        os.write(2, (line + "\n").encode())


@pytest.mark.parametrize("cli,user_level,level,filtered", [
    (True, None, "2", True),
    (True, "3", "3", True),
    (True, "0", "0", False),
    (False, None, None, False),
])
def test_quiet_cli_startup(monkeypatch, capfd, cli, user_level, level,
                           filtered):
    monkeypatch.setattr(tf_startup, "running_as_cli", lambda: cli)
    if user_level is None:
        monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", user_level)
    with tf_startup.quiet_cli_startup():
        _write_to_fd2(STARTUP_LINE, "E0000 a real error")
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == level
    err = capfd.readouterr().err
    assert "E0000 a real error\n" in err
    assert (STARTUP_LINE in err) is not filtered


def test_quiet_cli_startup_passes_an_error_on(monkeypatch, capfd):
    monkeypatch.setattr(tf_startup, "running_as_cli", lambda: True)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with pytest.raises(ImportError, match="broken"):
        with tf_startup.quiet_cli_startup():
            _write_to_fd2(STARTUP_LINE, "printed before the error")
            raise ImportError("broken")
    err = capfd.readouterr().err
    assert err == "printed before the error\n"
