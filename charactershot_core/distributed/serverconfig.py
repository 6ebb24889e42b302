"""Where a server (ComfyUI) may send view groups: decided by the server's owner, never by a workflow.

The Ray driver protocol carries pickled objects, so the machine at a Ray address can run code in the process that
connects to it.  Anyone who can queue a prompt on a shared ComfyUI must therefore not be able to choose that address.
A workflow only chooses *how* to run (:data:`EXECUTION`: ``here``, ``ray``, ``ray local``); *where* ``ray`` goes and
whether ``ray local`` is allowed come from the server's configuration, read by :func:`load` from

* the environment of the server process: ``CHARSHOT_RAY_ADDRESS`` (``HOST:PORT``, ``ray://HOST:10001``, ``auto`` or
  ``local``) and ``CHARSHOT_RAY_LOCAL`` (``1``/``0``), which win over
* the file ``__charactershot/ray.json`` in the server's user directory (ComfyUI: ``user/``; a ``__`` folder is a
  ComfyUI system-user folder that no HTTP endpoint reads or writes): ``{"address": "HOST:PORT", "local": true}``.

Ray's own ``RAY_ADDRESS`` is deliberately not read: it is set for Ray's command-line tools and inside Ray jobs, so a
server started from such a shell would offer that cluster to every workflow without its owner deciding so.

This module does not import ComfyUI (the adapter passes the user directory in) nor Ray.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping, Optional

from ..errors import CharacterShotError, InputError

HERE, RAY, RAY_LOCAL = "here", "ray", "ray local"
EXECUTION = (HERE, RAY, RAY_LOCAL)
ENV_ADDRESS = "CHARSHOT_RAY_ADDRESS"
ENV_LOCAL = "CHARSHOT_RAY_LOCAL"
CONFIG_DIR = "__charactershot"
CONFIG_NAME = "ray.json"
CONFIG_HINT = f"{CONFIG_DIR}/{CONFIG_NAME} in ComfyUI's user directory"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class ServerConfigError(CharacterShotError):
    """The server's own Ray configuration (environment or file) is malformed; the message names where."""


@dataclass
class RayServerConfig:
    """``address``: the cluster behind ``ray`` (None: none configured); ``local``: whether ``ray local`` may start a
    Ray on this machine; ``sources``: where each came from (for messages and logs)."""

    address: Optional[str] = None
    local: bool = False
    sources: dict = field(default_factory=dict)


def config_path(user_dir: str) -> str:
    return os.path.join(user_dir, CONFIG_DIR, CONFIG_NAME)


def _check_address(address: str, where: str) -> str:
    from .raylib import _host_port

    address = address.strip()
    if address in ("local", "auto"):
        return address
    try:
        _host_port(address)
    except InputError as e:
        raise ServerConfigError(f"{where}: {e.detail}") from None
    return address


def _flag(value, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ServerConfigError(f"{where}: expected 1 or 0 (true/false), got {value!r}")


def load(environ: Mapping[str, str], user_dir: Optional[str]) -> RayServerConfig:
    """The server's Ray configuration, from ``environ`` (the server process's environment) over the file in
    ``user_dir``.  Read at every use, so the owner can change the file without restarting the server."""
    cfg = RayServerConfig()
    path = config_path(user_dir) if user_dir else None
    if path and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise ServerConfigError(f"{path}: cannot read the Ray configuration ({e}); expected JSON such as "
                                    '{"address": "HOST:6379", "local": false}') from None
        if not isinstance(data, dict):
            raise ServerConfigError(f"{path}: expected a JSON object such as "
                                    '{"address": "HOST:6379", "local": false}, got ' + type(data).__name__)
        unknown = sorted(set(data) - {"address", "local"})
        if unknown:
            raise ServerConfigError(f"{path}: unknown key(s) {unknown}; expected 'address' (the Ray cluster's "
                                    "HOST:PORT, 'auto' or 'local') and 'local' (true/false)")
        address = data.get("address")
        if address is not None and not isinstance(address, str):
            raise ServerConfigError(f"{path}: address: expected a string such as \"HOST:6379\", got {address!r}")
        if address and address.strip():
            cfg.address = _check_address(address, f"{path}: address")
            cfg.sources["address"] = path
        if "local" in data:
            cfg.local = _flag(data["local"], f"{path}: local")
            cfg.sources["local"] = path
    env_address = (environ.get(ENV_ADDRESS) or "").strip()
    if env_address:
        cfg.address = _check_address(env_address, ENV_ADDRESS)
        cfg.sources["address"] = ENV_ADDRESS
    if environ.get(ENV_LOCAL) is not None:
        cfg.local = _flag(environ[ENV_LOCAL], ENV_LOCAL)
        cfg.sources["local"] = ENV_LOCAL
    return cfg


def old_address_error(value) -> Optional[str]:
    """The message for a value of the removed ``ray_address`` input (old workflows), or None when it is empty."""
    if value is None or not str(value).strip():
        return None
    return ("this input is no longer used and must be empty: a workflow cannot choose the machine the server "
            "connects to (a Ray address runs the cluster's code on this server). Clear it and choose "
            f"execution '{RAY}' (the Ray cluster the server's owner configured) or '{RAY_LOCAL}' "
            "(docs/distributed.md)")


def resolve(execution: str, ray_address, cfg: RayServerConfig) -> Optional[str]:
    """The Ray address a child driver gets for this workflow's choice, or None to sample in the server.

    ``ray_address`` is the removed input of old workflows: a non-empty value is an :class:`InputError`, never an
    address.  ``ray`` without a configured cluster and ``ray local`` without the owner's consent are
    :class:`InputError` on ``execution`` saying how the owner enables them."""
    msg = old_address_error(ray_address)
    if msg is not None:
        raise InputError("ray_address", msg)
    if execution == HERE:
        return None
    if execution == RAY:
        if cfg.address is None:
            raise InputError("execution", f"'{RAY}' sends the view groups to the Ray cluster configured by the "
                                          "server's owner, and this server has none. The owner enables it by "
                                          f"starting ComfyUI with {ENV_ADDRESS}=HEAD_HOST:6379 in its environment, "
                                          f"or by writing {{\"address\": \"HEAD_HOST:6379\"}} to {CONFIG_HINT} "
                                          f"(docs/distributed.md); otherwise choose '{HERE}'")
        return cfg.address
    if execution == RAY_LOCAL:
        if not cfg.local:
            raise InputError("execution", f"'{RAY_LOCAL}' starts a Ray with actors on this server's machine, which "
                                          "the server's owner has not allowed. The owner enables it by starting "
                                          f"ComfyUI with {ENV_LOCAL}=1 in its environment, or by writing "
                                          f"{{\"local\": true}} to {CONFIG_HINT} (docs/distributed.md); otherwise "
                                          f"choose '{HERE}'")
        return "local"
    raise InputError("execution", f"expected one of {list(EXECUTION)}, got {execution!r}")
