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
    return start_forked(fn, *args).result()


class Forked:
    """A call running in a forked child (:func:`start_forked`): :meth:`result` waits for it,
    :meth:`close` ends it unread."""

    def __init__(self, fn, args):
        self._done = None
        if "fork" not in mp.get_all_start_methods():
            self._done = (fn(*args), 0)
            return
        ctx = mp.get_context("fork")
        recv, send = ctx.Pipe(duplex=False)

        def child():
            import faulthandler
            faulthandler.disable()     # a native abort is reported by the parent, in one line
            send.send(fn(*args))
            send.close()

        self._proc = ctx.Process(target=child)
        self._proc.start()
        send.close()
        self._recv = recv

    def result(self):
        """``(fn(*args), exit code)``, or ``(None, exit code)`` when the child died first."""
        if self._done is None:
            try:
                out = self._recv.recv()
            except EOFError:
                out = None
            self._proc.join()
            self._recv.close()
            self._done = (out, self._proc.exitcode)
        return self._done

    def close(self):
        """End the child without its answer (the caller no longer needs it)."""
        if self._done is None:
            self._proc.kill()
            self._proc.join()
            self._recv.close()
            self._done = (None, self._proc.exitcode)


def start_forked(fn, *args) -> Forked:
    """:func:`call_forked` started, not waited for: the caller works on while the child
    computes, then reads ``.result()``."""
    return Forked(fn, args)
