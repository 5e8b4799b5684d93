"""Run a function in a forked child process, so that a crash there (a native abort, the
system killing it for memory) is a result the caller reports, not the end of the caller.

    >>> call_forked(sum, [1, 2, 3])
    (6, 0)
"""
from __future__ import annotations

import multiprocessing as mp


def call_forked(fn, *args):
    """``(fn(*args), exit code)`` from a forked child; ``(None, exit code)`` when the child
    died before answering (a negative code: the signal).  Where fork is unavailable the
    call runs here: ``(fn(*args), 0)``."""
    if "fork" not in mp.get_all_start_methods():
        return fn(*args), 0
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child():
        import faulthandler
        faulthandler.disable()     # a native abort is reported by the parent, in one line
        send.send(fn(*args))
        send.close()

    proc = ctx.Process(target=child)
    proc.start()
    send.close()
    try:
        out = recv.recv()
    except EOFError:
        out = None
    proc.join()
    return out, proc.exitcode
