"""Quiet arm subprocesses: TensorFlow's start-up lines are dropped from their
standard error, everything else (warnings, tracebacks) is passed on.

TensorFlow 2.21 prints its oneDNN and absl start-up lines from C++ before
`TF_CPP_MIN_LOG_LEVEL` applies, so they are filtered from the child's
standard error instead: the child inherits a pipe as its file descriptor 2
and a thread of the parent forwards the lines worth reading.
"""

import contextlib
import os
import sys
import threading

from keras_hybrid.tf_startup import is_startup_line


def _forward(read_fd, target_fd):
    """Copies lines from `read_fd` to `target_fd`, except start-up lines,
    until every writer has closed the pipe."""
    pending = b""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while True:
            chunk = pipe.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                text = line.decode("utf-8", "replace")
                if not is_startup_line(text):
                    os.write(target_fd, line + b"\n")
    if pending and not is_startup_line(pending.decode("utf-8", "replace")):
        os.write(target_fd, pending)
    os.close(target_fd)


class Forwarder:
    """What `filtered_stderr_for_children` yields: its forwarding `thread`
    (set when the block exits; it ends when the children have exited)."""

    thread = None


@contextlib.contextmanager
def filtered_stderr_for_children():
    """Processes started inside this block write their standard error
    through the start-up line filter (the parent's is restored at exit).

    Yields:
        A `Forwarder`.
    """
    forwarder = Forwarder()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    saved = os.dup(2)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield forwarder
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        # The thread writes to its own copy of this standard error, which
        # stays valid if descriptor 2 is redirected again later.
        forwarder.thread = threading.Thread(
            target=_forward, args=(read_fd, saved), daemon=True,
            name="child-stderr",
        )
        forwarder.thread.start()
