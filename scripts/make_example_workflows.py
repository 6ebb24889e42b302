"""Write the UI-format templates in example_workflows/ from their API-format twins in tests/workflows/.

The API twins are what the e2e tests run through a real ComfyUI; this script lays each one out as a workflow the
ComfyUI editor opens (nodes, links, widget values in the order /object_info gives), so the templates can never drift
from what is tested. Run it after changing a node's inputs or a twin:

    .venv/bin/python scripts/make_example_workflows.py          # starts a temporary ComfyUI for /object_info
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TWINS = REPO / "tests" / "workflows"
OUT = REPO / "example_workflows"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _is_widget(spec) -> bool:
    t = spec[0]
    return isinstance(t, list) or t in WIDGET_TYPES


def _widget_values(node_info: dict, inputs: dict) -> list:
    values = []
    for section in ("required", "optional"):
        for name in node_info.get("input_order", {}).get(section, []):
            spec = node_info["input"][section][name]
            if not _is_widget(spec):
                continue
            opts = spec[1] if len(spec) > 1 else {}
            value = inputs.get(name, opts.get("default"))
            if isinstance(value, list):  # a link feeds this widget input: keep the default as the widget's value
                value = opts.get("default")
            values.append(value)
            # the editor adds a "control after generate" widget after seeds (by flag, or by the name seed/noise_seed)
            if opts.get("control_after_generate") or (spec[0] == "INT" and name in ("seed", "noise_seed")):
                values.append("fixed")
    return values


def api_to_ui(prompt: dict, object_info: dict, title: str = "") -> dict:
    ids = {key: i + 1 for i, key in enumerate(prompt)}
    nodes, links = [], []
    link_id = 0
    incoming: dict[tuple[int, int], list[int]] = {}
    depth: dict[str, int] = {}

    def node_depth(key: str) -> int:
        if key not in depth:
            ups = [v[0] for v in prompt[key]["inputs"].values() if isinstance(v, list) and len(v) == 2]
            depth[key] = 1 + max((node_depth(u) for u in ups), default=-1)
        return depth[key]

    rows: dict[int, int] = {}
    for key, node in prompt.items():
        info = object_info[node["class_type"]]
        ins = []
        for section in ("required", "optional"):
            for name in info.get("input_order", {}).get(section, []):
                spec = info["input"][section][name]
                value = node["inputs"].get(name)
                linked = isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)
                if _is_widget(spec) and not linked:
                    continue
                if not linked and section == "optional":
                    continue
                entry = {"name": name, "type": spec[0] if not isinstance(spec[0], list) else "COMBO", "link": None}
                if _is_widget(spec):
                    entry["widget"] = {"name": name}
                if linked:
                    link_id += 1
                    src, slot = ids[value[0]], value[1]
                    links.append([link_id, src, slot, ids[key], len(ins), info["input"][section][name][0]])
                    incoming.setdefault((src, slot), []).append(link_id)
                    entry["link"] = link_id
                ins.append(entry)
        d = node_depth(key)
        row = rows.get(d, 0)
        rows[d] = row + 1
        nodes.append({
            "id": ids[key], "type": node["class_type"], "pos": [40 + d * 360, 40 + row * 320], "size": [320, 260],
            "flags": {}, "order": 0, "mode": 0, "inputs": ins,
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i}
                        for i, (n, t) in enumerate(zip(info.get("output_name", info["output"]), info["output"]))],
            "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": _widget_values(info, node["inputs"]),
        })
        if node.get("_meta", {}).get("title"):
            nodes[-1]["title"] = node["_meta"]["title"]
    for n in nodes:
        for out in n["outputs"]:
            out["links"] = incoming.get((n["id"], out["slot_index"]), [])
    order = sorted(prompt, key=node_depth)
    for n in nodes:
        n["order"] = order.index(next(k for k, v in ids.items() if v == n["id"]))
    return {"last_node_id": len(nodes), "last_link_id": link_id, "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {"charactershot": {"title": title, "generated_from": "tests/workflows"}},
            "version": 0.4}


def main() -> int:
    sys.path.insert(0, str(REPO))
    from tests.comfy_host import ComfyHost

    host = ComfyHost().start()
    try:
        info = host.object_info()
    finally:
        host.stop()
    OUT.mkdir(exist_ok=True)
    for twin in sorted(TWINS.glob("*.json")):
        prompt = json.loads(twin.read_text())
        title = prompt.pop("_title", twin.stem)
        ui = api_to_ui(prompt, info, title)
        (OUT / twin.name).write_text(json.dumps(ui, indent=1) + "\n")
        print(f"wrote {OUT / twin.name} ({len(ui['nodes'])} nodes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
