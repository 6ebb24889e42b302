"""Write the UI-format templates in example_workflows/ from their API-format twins in tests/workflows/.

The API twins are what the e2e tests run through a real ComfyUI; this script lays each one out as a workflow the
ComfyUI editor opens (nodes, links, widget values in the order /object_info gives), so the templates can never drift
from what is tested. Run it after changing a node's inputs or a twin:

    .venv/bin/python scripts/make_example_workflows.py          # starts a temporary ComfyUI for /object_info
    .venv/bin/python scripts/make_example_workflows.py --thumbnails-only   # only the .jpg thumbnails

Every template also gets a ``<name>.jpg`` thumbnail (the graph, under ``docs/images/<name>_result.png``/``.jpg`` if
there is one), which ComfyUI's template browser shows beside it.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass, field
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

    rows: dict[int, int] = {}  # column -> next free y
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
        widgets = _widget_values(info, node["inputs"])
        # about the editor's own size: a title, one row per slot or widget, room for an output node's preview
        height = 46 + 21 * (max(len(ins), len(info["output"])) + len(widgets)) + (300 if info.get("output_node") else 0)
        y = rows.get(d, 40)
        rows[d] = y + height + 50
        nodes.append({
            "id": ids[key], "type": node["class_type"], "pos": [40 + d * 360, y], "size": [320, height],
            "flags": {}, "order": 0, "mode": 0, "inputs": ins,
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i}
                        for i, (n, t) in enumerate(zip(info.get("output_name", info["output"]), info["output"]))],
            "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": widgets,
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


# where the model files a template's loaders name come from, and the models folder they go in (docs/checkpoints.md)
MODEL_DOWNLOADS = {
    "CharacterShot/": ("https://huggingface.co/Gaojunyao/CharacterShot", "charactershot"),
    "Character2D/": ("https://huggingface.co/Gaojunyao/Character2D", "charactershot"),
    "t5xxl_fp16.safetensors": ("https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/"
                               "t5xxl_fp16.safetensors", "text_encoders"),
    "sv3d_p.safetensors": ("https://huggingface.co/stabilityai/sv3d/resolve/main/sv3d_p.safetensors", "checkpoints"),
}


def add_model_metadata(ui: dict) -> dict:
    """``properties.models`` ([{name, url, directory}]) on every node whose widgets name a model of MODEL_DOWNLOADS:
    newer front-ends (1.58+) read it to say what is missing, where to get it and where it goes, before a run."""
    for node in ui["nodes"]:
        values = node.get("widgets_values") or []
        models = [{"name": v, "url": MODEL_DOWNLOADS[v][0], "directory": MODEL_DOWNLOADS[v][1]}
                  for v in dict.fromkeys(x for x in values if isinstance(x, str) and x in MODEL_DOWNLOADS)]
        if models:
            node.setdefault("properties", {})["models"] = models
    return ui


# ------------------------------------------------------------------------------------------------ twins
@dataclass
class Twin:
    """An API twin: ``prompt`` is the template's graph; ``ui_only`` gives /object_info-style specs of third-party
    nodes the test host does not have (DWPose...); ``fixtures`` replace, in tests only, nodes that need those or
    big weights (by node id), so the rest of the graph runs through the real host."""

    name: str
    title: str
    prompt: dict
    ui_only: dict = field(default_factory=dict)
    fixtures: dict = field(default_factory=dict)

    def template(self, object_info: dict) -> dict:
        return add_model_metadata(api_to_ui(self.prompt, {**object_info, **self.ui_only}, self.title))

    def for_test(self) -> dict:
        """The prompt a test runs: the fixtures in place of the nodes they replace.  A fixture's ``_outputs``
        ({"replaced slot": fixture slot}) re-points the links that used the replaced node's other outputs."""
        prompt = copy.deepcopy(self.prompt)
        slots = {}
        for key, node in copy.deepcopy(self.fixtures).items():
            slots[key] = {int(a): int(b) for a, b in node.pop("_outputs", {}).items()}
            prompt[key] = node
        for node in prompt.values():
            for name, value in node["inputs"].items():
                if isinstance(value, list) and len(value) == 2 and value[0] in slots:
                    node["inputs"][name] = [value[0], slots[value[0]].get(value[1], value[1])]
        return prompt


def read_twin(path: Path) -> Twin:
    data = json.loads(Path(path).read_text())
    title = data.pop("_title", Path(path).stem)
    ui_only = data.pop("_ui_only_nodes", {})
    fixtures = data.pop("_test_fixtures", {})
    unknown = [k for k in data if k.startswith("_")]
    if unknown:
        raise ValueError(f"{path}: unknown twin keys {unknown}")
    missing = [k for k in fixtures if k not in data]
    if missing:
        raise ValueError(f"{path}: _test_fixtures replace nodes {missing} that the graph does not have")
    return Twin(Path(path).stem, title, data, ui_only, fixtures)


# ------------------------------------------------------------------------------------------------ thumbnails
THUMB_SIZE = (512, 384)
PICTURES = REPO / "docs" / "images"  # an optional <template>_result.png (or .jpg) shown above the graph


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def draw_thumbnail(ui: dict, title: str = "", picture=None):
    """The template's thumbnail (ComfyUI shows <name>.jpg beside <name>.json): the graph as laid out in the editor
    (boxes and links; CharacterShot nodes in blue, core nodes in grey), under a result picture when one is given."""
    from PIL import Image, ImageDraw

    w, h = THUMB_SIZE
    img = Image.new("RGB", (w, h), (30, 31, 36))
    d = ImageDraw.Draw(img)
    top = 0
    if picture is not None:
        pic = picture.convert("RGB")
        pic.thumbnail((w, int(h * 0.55)))
        img.paste(pic, ((w - pic.width) // 2, 0))
        top = pic.height + 4
    d.text((8, top + 4), title[:70], fill=(225, 225, 230), font=_font(13))
    nodes = ui["nodes"]
    if not nodes:
        return img
    x0 = min(n["pos"][0] for n in nodes)
    y0 = min(n["pos"][1] for n in nodes)
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes)
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes)
    area = (10, top + 26, w - 10, h - 10)
    sc = min((area[2] - area[0]) / max(1, x1 - x0), (area[3] - area[1]) / max(1, y1 - y0))
    boxes = {}
    for n in nodes:
        bx = area[0] + (n["pos"][0] - x0) * sc
        by = area[1] + (n["pos"][1] - y0) * sc
        boxes[n["id"]] = (bx, by, bx + n["size"][0] * sc, by + n["size"][1] * sc)
    for link in ui["links"]:
        _, src, _, dst = link[:4]
        a, b = boxes[src], boxes[dst]
        d.line([(a[2], (a[1] + a[3]) / 2), (b[0], (b[1] + b[3]) / 2)], fill=(160, 160, 90), width=2)
    font = _font(max(8, int(11 * min(1.0, sc * 2.2))))
    for n in nodes:
        b = boxes[n["id"]]
        ours = n["type"].startswith("CharacterShot")
        d.rounded_rectangle(b, radius=5, fill=(44, 78, 120) if ours else (70, 70, 76),
                            outline=(120, 170, 230) if ours else (150, 150, 150))
        name = n.get("title") or n["type"].replace("CharacterShot", "")
        words, lines, line = name.split(), [], ""
        for word in words:  # wrap to the box
            if line and d.textlength(f"{line} {word}", font=font) > b[2] - b[0] - 8:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        for i, text in enumerate(lines[:4]):
            d.text((b[0] + 4, b[1] + 3 + i * (font.size + 2 if hasattr(font, "size") else 12)), text,
                   fill=(235, 235, 240), font=font)
    return img


def write_thumbnail(name: str, ui: dict) -> Path:
    from PIL import Image

    pics = [PICTURES / f"{name}_result{ext}" for ext in (".png", ".jpg")]
    pic = next((p for p in pics if p.is_file()), None)
    title = ui.get("extra", {}).get("charactershot", {}).get("title", name)
    img = draw_thumbnail(ui, title, Image.open(pic) if pic else None)
    path = OUT / f"{name}.jpg"
    tmp = path.with_suffix(".jpg.partial")
    img.save(tmp, format="JPEG", quality=88)
    tmp.replace(path)
    return path


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    OUT.mkdir(exist_ok=True)
    if "--thumbnails-only" not in args:
        sys.path.insert(0, str(REPO))
        from tests.comfy_host import ComfyHost

        host = ComfyHost().start()
        try:
            info = host.object_info()
        finally:
            host.stop()
        for path in sorted(TWINS.glob("*.json")):
            ui = read_twin(path).template(info)
            (OUT / path.name).write_text(json.dumps(ui, indent=1) + "\n")
            print(f"wrote {OUT / path.name} ({len(ui['nodes'])} nodes)")
    for template in sorted(OUT.glob("*.json")):
        print(f"wrote {write_thumbnail(template.stem, json.loads(template.read_text()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
