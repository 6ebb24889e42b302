"""Where a server may send view groups comes from its owner's configuration (environment, then the file in the user
directory), never from a workflow: the removed ``ray_address`` input is refused, ``ray`` and ``ray local`` need the
owner's consent, Ray's own RAY_ADDRESS is not taken as consent, and a malformed configuration names its source."""

from __future__ import annotations

import json

import pytest

from charactershot_core.distributed import serverconfig as sc
from charactershot_core.errors import InputError


def _write(user_dir, data):
    path = user_dir / sc.CONFIG_DIR / sc.CONFIG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_nothing_configured_allows_only_here(tmp_path):
    cfg = sc.load({"RAY_ADDRESS": "10.0.0.5:6379"}, str(tmp_path))  # Ray's own variable is not the owner's consent
    assert cfg.address is None and cfg.local is False
    assert sc.resolve("here", "", cfg) is None
    with pytest.raises(InputError, match=r"^execution: 'ray' .* this server has none\. The owner enables it by "
                                         r"starting ComfyUI with CHARSHOT_RAY_ADDRESS=HEAD_HOST:6379"):
        sc.resolve("ray", "", cfg)
    with pytest.raises(InputError, match=r"^execution: 'ray local' .* not allowed\. .*CHARSHOT_RAY_LOCAL=1"):
        sc.resolve("ray local", None, cfg)
    with pytest.raises(InputError, match=r"^execution: expected one of \['here', 'ray', 'ray local'\], got 'x'"):
        sc.resolve("x", "", cfg)


@pytest.mark.parametrize("execution", sc.EXECUTION)
def test_an_old_address_is_refused_whatever_the_configuration(tmp_path, execution):
    _write(tmp_path, {"address": "10.0.0.5:6379", "local": True})
    cfg = sc.load({}, str(tmp_path))
    assert (cfg.address, cfg.local) == ("10.0.0.5:6379", True)
    for old in ("127.0.0.1:6379", "local", "auto", " ray://h:10001 "):
        with pytest.raises(InputError, match=r"^ray_address: this input is no longer used and must be empty"):
            sc.resolve(execution, old, cfg)
    assert sc.old_address_error("  ") is None and sc.old_address_error(None) is None


def test_the_file_enables_ray_and_ray_local(tmp_path):
    path = _write(tmp_path, {"address": " 10.0.0.5:6379 ", "local": True})
    cfg = sc.load({}, str(tmp_path))
    assert sc.resolve("ray", "", cfg) == "10.0.0.5:6379"
    assert sc.resolve("ray local", "", cfg) == "local"
    assert cfg.sources == {"address": str(path), "local": str(path)}


def test_the_environment_wins_over_the_file(tmp_path):
    _write(tmp_path, {"address": "10.0.0.5:6379", "local": True})
    cfg = sc.load({"CHARSHOT_RAY_ADDRESS": "auto", "CHARSHOT_RAY_LOCAL": "0"}, str(tmp_path))
    assert (cfg.address, cfg.local) == ("auto", False)
    assert cfg.sources == {"address": "CHARSHOT_RAY_ADDRESS", "local": "CHARSHOT_RAY_LOCAL"}
    cfg = sc.load({"CHARSHOT_RAY_ADDRESS": "ray://head:10001", "CHARSHOT_RAY_LOCAL": "yes"}, None)
    assert sc.resolve("ray", "", cfg) == "ray://head:10001" and sc.resolve("ray local", "", cfg) == "local"


@pytest.mark.parametrize("env, data, message", [
    ({"CHARSHOT_RAY_ADDRESS": "ftp://x:1"}, None, r"^CHARSHOT_RAY_ADDRESS: unknown scheme 'ftp'"),
    ({"CHARSHOT_RAY_ADDRESS": "head:port"}, None, r"^CHARSHOT_RAY_ADDRESS: expected HOST:PORT, got 'head:port'"),
    ({"CHARSHOT_RAY_LOCAL": "maybe"}, None, r"^CHARSHOT_RAY_LOCAL: expected 1 or 0 \(true/false\), got 'maybe'"),
    ({}, "{not json", r"ray\.json: cannot read the Ray configuration"),
    ({}, "[1]", r"ray\.json: expected a JSON object"),
    ({}, {"adress": "h:1"}, r"ray\.json: unknown key\(s\) \['adress'\]"),
    ({}, {"address": 6379}, r"ray\.json: address: expected a string"),
    ({}, {"local": "perhaps"}, r"ray\.json: local: expected 1 or 0"),
])
def test_a_malformed_configuration_names_its_source(tmp_path, env, data, message):
    if data is not None:
        _write(tmp_path, data)
    with pytest.raises(sc.ServerConfigError, match=message):
        sc.load(env, str(tmp_path))
