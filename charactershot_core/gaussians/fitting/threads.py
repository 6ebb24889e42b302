"""CPU threads while the pack fits or renders on the CPU.

PyTorch's CPU kernels use OpenMP with one thread per core, and OpenMP's default wait policy lets idle threads spin.
When anything else runs on a small machine, such as the browser drawing ComfyUI's page on the same two cores,
the spinning threads and the other process fight for the cores and a fit can slow down by more than ten times
(issue 8: 2 iterations in 30 s instead of 80 in 36 s). Users start ComfyUI themselves, so environment variables
set by our scripts do not help; the pack therefore chooses its own thread count while it works: all cores but one
on small machines (one thread on a 2-core machine), measured in ``benchmarks/bench_fit_browser.py``.

``CHARSHOT_CPU_THREADS=<n>`` overrides the choice (0 = leave PyTorch's setting alone).
"""

from __future__ import annotations

import contextlib
import os
import threading

import torch

_lock = threading.Lock()


def chosen_threads(total: int | None = None) -> int | None:
    """The thread count for CPU work, or None to keep PyTorch's own setting."""
    env = os.environ.get("CHARSHOT_CPU_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = -1
        if n >= 0:
            return n or None
    if not total:
        total = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if total <= 1:
        return 1
    if total <= 8:
        return total - 1  # leave one core to the browser and the server's own threads
    return None  # big machines: PyTorch's default (one per physical core) is fine


@contextlib.contextmanager
def cpu_threads(n: int | None = None):
    """Run the block with ``n`` (default: :func:`chosen_threads`) intra-op threads, then restore the old count."""
    n = chosen_threads() if n is None else n
    if not n:
        yield None
        return
    with _lock:
        old = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        with _lock:
            torch.set_num_threads(old)
