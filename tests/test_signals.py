"""How lcpipe.signals stops a process, in small child processes (the pipeline trials are in test_kill.py).

A signal handler's exception lands between two bytecodes; in code that takes a lock before its
``try`` (importlib, threading, logging) that leaves the lock held, and in a weakref callback it is
printed and dropped. These check that the stop waits for ordinary code and is never lost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import helpers
import pytest

CHILD = """
import os, signal, sys, time, weakref
from lcpipe import signals
signals.install()
done = []
try:
{body}
    time.sleep(5)  # the stop must come here, in ordinary code
    done.append("not stopped")
except signals.Interrupted as exc:
    signals.finish(exc, f"stopped after {{done}}")
"""

IN_LOCK_HOLDING_CODE = """
    # a function of a module that holds locks across statements (its name is what counts)
    ns = {"__name__": "threading._lcpipe_test"}
    exec("import os, signal\\ndef critical(done):\\n    os.kill(os.getpid(), signal.SIGTERM)\\n"
         "    for _ in range(100000): pass\\n    done.append('critical section finished')\\n", ns)
    ns["critical"](done)
"""

IN_A_WEAKREF_CALLBACK = """
    class Thing: pass
    def callback(ref):  # an exception raised in here is printed and dropped by Python
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100000): pass
    thing = Thing()
    ref = weakref.ref(thing, callback)
    del thing
"""


def _child(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(body=textwrap.indent(textwrap.dedent(body), "    ")))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(helpers.REPO)})


# lock-holding module: the stop waits until its code has run; weakref callback: the stop cuts it short,
# and Python drops the exception there, so it must come again (not be lost, not be printed)
@pytest.mark.parametrize("where,done", [(IN_LOCK_HOLDING_CODE, "['critical section finished']"),
                                        (IN_A_WEAKREF_CALLBACK, "[]")],
                         ids=["lock-holding-module", "weakref-callback"])
def test_a_signal_stops_the_process_in_ordinary_code(tmp_path: Path, where: str, done: str) -> None:
    res = _child(tmp_path, where)
    assert res.returncode == 143, res.stderr
    assert res.stderr == f"stopped after {done}\n"  # one line: no "Exception ignored", no traceback


def test_a_second_signal_ends_the_process_at_once(tmp_path: Path) -> None:
    res = _child(tmp_path, """
        def slow_cleanup():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            finally:  # a cleanup that hangs: the second signal must not wait for it
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
        slow_cleanup()
    """)
    assert res.returncode == 143 and res.stderr == "lcpipe: SIGTERM: stopped at once (second signal)\n", res.stderr


def test_paddle_imported_after_install_leaves_sigterm_to_lcpipe(tmp_path: Path) -> None:
    pytest.importorskip("paddle")
    res = _child(tmp_path, """
        import paddle2onnx  # imports Paddle, which installs C++ handlers for SIGTERM and others
        caught = next(int(line.split()[1], 16) for line in open('/proc/self/status') if line.startswith('SigCgt'))
        assert caught & (1 << (signal.SIGSEGV - 1)) == 0, 'Paddle still holds SIGSEGV'
        os.kill(os.getpid(), signal.SIGTERM)
    """)
    assert res.returncode == 143 and "C++" not in res.stderr and res.stderr.endswith("stopped after []\n"), res.stderr


def test_the_handlers_run_on_the_threads_own_stack(tmp_path: Path) -> None:
    """OpenVINO's CPU plugin gives a thread a 20,144-byte alternate signal stack, too small for a signal frame
    with live AMX tile state (a SIGTERM in validate became a SIGSEGV): the handlers must not use it."""
    res = _child(tmp_path, """
        import ctypes
        libc = ctypes.CDLL(None)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
            action = ctypes.create_string_buffer(256)
            libc.sigaction(sig, None, action)
            done.append(int.from_bytes(action.raw[136:140], "little") & 0x08000000)  # SA_ONSTACK
        os.kill(os.getpid(), signal.SIGTERM)
    """)
    assert res.returncode == 143 and res.stderr == "stopped after [0, 0, 0]\n", res.stderr


def test_a_forked_child_stops_on_sigterm_whatever_it_is_blocked_in(tmp_path: Path) -> None:
    """A library's forked helper (NNCF's telemetry sends from a multiprocessing child, forked from a
    process with threads, which can deadlock in getaddrinfo) is stopped by SIGTERM: terminate() at its
    timeout, and multiprocessing's exit hook, rely on that. With lcpipe's Python-level handler inherited,
    a child blocked in C never ran it: `lcpipe run` hung at exit, joining that child, after its last stage."""
    res = _child(tmp_path, """
        import ctypes, multiprocessing
        def blocked_in_c():  # a second lock of a default pthread mutex: waits in a futex for ever
            libc = ctypes.CDLL(None)
            mutex = ctypes.create_string_buffer(64)
            libc.pthread_mutex_lock(mutex)
            libc.pthread_mutex_lock(mutex)
        out = []
        for sig in (signal.SIGTERM, signal.SIGINT):  # terminate(); Ctrl-C reaching the process group
            child = multiprocessing.get_context("fork").Process(target=blocked_in_c, daemon=True)
            child.start()
            time.sleep(0.5)
            os.kill(child.pid, sig)
            child.join(10)
            if child.is_alive():
                os.kill(child.pid, signal.SIGKILL)
                child.join()
                out.append("alive")
            out.append(str(child.exitcode))
        print(*out, signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, flush=True)
        sys.exit(0)
    """)
    assert res.returncode == 0 and res.stdout.split() == ["-15", "-2", "True"], (res.stdout, res.stderr)
    assert res.stderr == ""  # the children went quietly: no KeyboardInterrupt traceback
