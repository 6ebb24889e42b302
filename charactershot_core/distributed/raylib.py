"""Ray, optional and imported lazily: finding it, connecting to a cluster (or starting a local one), and the
checks that turn Ray's slow or cryptic failures into clear messages.

Nothing here imports Ray at module import time: the pack works without it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from typing import Optional

from ..errors import CharacterShotError, InputError

INSTALL_HINT = ("install the optional extra: pip install 'charactershot[ray]' (or pip install 'ray>=2.40') into the "
                "Python that runs the pack")
LOCAL = ("", "local")


class RayUnavailable(CharacterShotError):
    """Ray was asked for but is not installed in this Python."""


def require_ray():
    """The ``ray`` module, or :class:`RayUnavailable` with the way to install it."""
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable(f"Ray is not installed ({e}); {INSTALL_HINT}. Without Ray, the local executor runs "
                             "the view groups one after the other (leave out --ray), or run "
                             "'python -m charactershot_core sample --groups ...' on each GPU and 'merge' the "
                             "runs") from None
    return ray


def resolve_address(address: Optional[str]) -> str:
    """The address to use: the argument, else ``RAY_ADDRESS``, else ``""`` (start a local Ray)."""
    if address is None:
        address = os.environ.get("RAY_ADDRESS", "")
    return address.strip()


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``host:port``, ``ray://host:port`` (Ray Client) or ``[v6]:port``; None for ``auto``."""
    a = address
    default_port = 6379
    if "://" in a:
        scheme, a = a.split("://", 1)
        if scheme == "ray":
            default_port = 10001
        elif scheme not in ("http", "https"):
            raise InputError("ray_address", f"unknown scheme {scheme!r} in {address!r}; expected HOST:PORT (the "
                                            "address 'ray start --head' prints, port 6379 by default) or "
                                            "ray://HOST:10001")
    a = a.split("/", 1)[0]
    if not a or a == "auto":
        return None
    if a.startswith("["):
        host, _, rest = a[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif a.count(":") == 1:
        host, port = a.split(":")
    else:
        host, port = a, ""
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise InputError("ray_address", f"expected HOST:PORT, got {address!r}") from None


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in ``timeout`` seconds when nothing listens at ``address`` (``ray.init`` would retry for minutes)."""
    hp = _host_port(address)
    if hp is None:
        return
    host, port = hp
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise CharacterShotError(
            f"cannot reach the Ray cluster at {address!r} ({host}:{port}: {e.strerror or e}) within {timeout:g} s. "
            "Start one with 'ray start --head' on the head machine (it prints the address to use, HOST:6379), check "
            "the address, the firewall and RAY_ADDRESS; or leave the address empty to run on this machine") from None


def runtime_env() -> dict:
    """Ship this checkout's ``charactershot_core`` to the workers, so that every node runs the same code as the
    driver (group keys and results depend on it); the nodes need only the pack's requirements."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {"py_modules": [here], "excludes": ["__pycache__", "*.pyc"]}


@contextlib.contextmanager
def _keep_stop_handlers():
    """``ray.init`` replaces the process's SIGTERM (Windows: SIGBREAK) handler with one that exits with the signal's
    number; put the caller's handler back once it returns, so a stop asked for later ends the process the caller's
    way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGBREAK", None)) if s is not None]
    saved = {s: signal.getsignal(s) for s in sigs}
    try:
        yield
    finally:
        for s, h in saved.items():
            if h is not None:
                signal.signal(s, h)


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None, num_gpus: Optional[int] = None,
            timeout: float = 5.0, ship_code: bool = True, quiet: bool = True):
    """``ray.init`` for the pack; returns the ``ray`` module.

    ``address``: ``None`` reads ``RAY_ADDRESS``; empty or ``local`` starts Ray on this machine (``num_cpus`` /
    ``num_gpus`` limit it); ``auto`` joins the cluster ``ray start`` started on this machine; ``HOST:PORT`` or
    ``ray://HOST:PORT`` joins a remote one, after checking within ``timeout`` seconds that it answers.
    An already initialised Ray (e.g. a test's cluster) is used as it is.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    address = resolve_address(address)
    kwargs = dict(ignore_reinit_error=True, include_dashboard=False, log_to_driver=not quiet,
                  configure_logging=True, logging_level="WARNING")
    if ship_code:
        kwargs["runtime_env"] = runtime_env()
    if address in LOCAL:
        if num_cpus is not None:
            kwargs["num_cpus"] = int(num_cpus)
        if num_gpus is not None:
            kwargs["num_gpus"] = int(num_gpus)
        with _keep_stop_handlers():
            ray.init(address="local", **kwargs)
        return ray
    check_reachable(address, timeout)
    try:
        with _keep_stop_handlers():
            ray.init(address=address, **kwargs)
    except ConnectionError as e:
        raise CharacterShotError(f"cannot join the Ray cluster at {address!r}: {e}. 'ray status' on the head "
                                 "machine shows whether it runs") from None
    return ray


def cluster_resources(ray) -> dict:
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def check_gpus(ray, gpus: int) -> None:
    """``gpus`` GPUs must exist in the cluster (not necessarily free)."""
    have = int(cluster_resources(ray).get("GPU", 0))
    if gpus > have:
        raise InputError("gpus", f"{gpus} GPU(s) requested but the Ray cluster has {have}; ask for at most {have}"
                                 + ("" if have else " (0 or no --gpus: CPU actors)")
                                 + ", or add GPU machines with 'ray start --address=HEAD:6379' on each")


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)
