"""Write the UI-format templates in example_workflows/ from their API-format twins in tests/workflows/.

The API twins are what the e2e tests run through a real ComfyUI; this script lays each one out as a workflow the
ComfyUI editor opens (nodes, links, widget values in the order /object_info gives), so the templates can never drift
from what is tested. Run it after changing a node's inputs or a twin:

    .venv/bin/python scripts/make_example_workflows.py          # starts a temporary ComfyUI for /object_info
    .venv/bin/python scripts/make_example_workflows.py --thumbnails-only   # only the .jpg thumbnails

What a twin adds to its graph (keys starting with "_"): ``_file``, the template's file name, which both front-ends
show as the card's title and description (they read nothing else for a custom pack's templates), numbered so the
demo comes first; ``_groups``, the stages (a titled group each, in rows, a few columns of nodes per group);
``_optional_nodes``, shown bypassed (an optional path); ``_ui_only_nodes``, third-party node specs with their pack
(``cnr_id``/``aux_id``/``ver``). ``tests/workflows/<twin>.md`` is the template's Markdown note. Every node gets its
pack in ``properties`` (core, this pack from pyproject.toml, or the third-party one) and a size with room for what
it shows after a run (tests/template_layout.py measures both front-ends). Every template also gets a
``<file>.jpg`` thumbnail of its result, which the template browser shows on its card.
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
CORE_VERSION = "0.3.75"  # the ComfyUI the templates are generated and tested with (core nodes' "ver")


def _pack() -> dict:
    """This pack's registry id and version (pyproject.toml ``[project]`` name and version)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {"name": project["name"], "version": project["version"]}


PACK = _pack()


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


# ------------------------------------------------------------------------------------------------ layout
# LiteGraph's geometry (both front-ends): a node's title bar sits above node.pos; one row per slot; widgets stacked
TITLE_H, SLOT_H, WIDGET_H = 30, 20, 24
NODE_W, WIDE_W = 340, 420  # the 4D preview widget makes its nodes 420 wide
GAP = 50  # between two nodes' boxes, and room for what a node adds after a run
GROUP_PAD, GROUP_TITLE = 24, 46  # inside a group: padding, and its title bar
NOTE_W = 480
MULTILINE_H = 110  # a multiline text box
# what a node shows below its widgets (an image, the 4D preview, the saved-file list), kept free from the start so
# that nothing moves or overlaps after a run; checked by tests/template_layout.py on both front-ends
SHOWS_BELOW = {
    "LoadImage": 300, "SaveImage": 300, "PreviewImage": 300, "SaveAnimatedWEBP": 300, "SaveWEBM": 300,
    "CharacterShotCameraRig": 220, "CharacterShotSaveMultiView": 300, "CharacterShotPreview4D": 380, "CharacterShotLoad4DGaussians": 380, "CharacterShotSave4DGaussians": 520,
    "CharacterShotFit4DGaussians": 200,  # the progress text and the summary after a run
}
VIEW_SCALE = 0.8  # the zoom a template opens at (text is drawn in full from 0.6 up)
VIEW_OFFSET = (100, 170)  # graph units: the note's title clear of the side bar, the tabs and the workflow menu


def _text_width(text: str, px: float = 7.6) -> float:
    return len(text) * px


UPLOAD_WIDGET = {"LoadImage", "LoadVideo", "LoadAudio"}  # an upload button below the file list


def node_size(class_type: str, info: dict, title: str, n_slot_rows: int, widget_specs: list) -> list:
    """A node's size as the editor draws it (without its title bar; measured on both front-ends), with room for
    what it shows after a run."""
    h = SLOT_H * n_slot_rows + 14
    for spec in widget_specs:
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        h += MULTILINE_H if opts.get("multiline") else WIDGET_H
        if opts.get("control_after_generate") or (spec[0] == "INT" and opts.get("_name") in ("seed", "noise_seed")):
            h += WIDGET_H  # the editor's "control after generate" widget
    if class_type in UPLOAD_WIDGET:
        h += WIDGET_H
    if "cnr_id" in info:  # a third-party node the editor may not have: drawn as a placeholder of its own size
        h += 40
    h += SHOWS_BELOW.get(class_type, 0)
    if info.get("output_node") and class_type not in SHOWS_BELOW:
        h += 60  # a text summary under the node
    w = WIDE_W if SHOWS_BELOW.get(class_type, 0) >= 380 else NODE_W
    w = max(w, _text_width(title) + 70)
    return [int(round(w)), int(round(h))]


def note_height(text: str, width: int = NOTE_W) -> int:
    """About the height the Markdown note needs for ``text`` at the note's width."""
    per_line = max(20, int((width - 30) / 7.2))
    lines = 0
    for line in text.splitlines():
        lines += 1 + len(line) // per_line
    return int(40 + lines * 19.5)


def layout(groups: list, sizes: dict, origin=(NOTE_W + 80, 0)) -> tuple[dict, list]:
    """Positions of the nodes (id -> [x, y] of the node body) and the groups' boxes: groups in rows, each group a
    few columns of nodes stacked top to bottom; rows and groups never overlap."""
    pos, boxes = {}, []
    rows = sorted({g.get("row", 0) for g in groups})
    y_row = origin[1]
    for r in rows:
        x = origin[0]
        row_h = 0
        for g in (g for g in groups if g.get("row", 0) == r):
            gx = x + GROUP_PAD
            col_bottoms = []
            for col in g["columns"]:
                cw = max(sizes[k][0] for k in col)
                y = y_row + GROUP_TITLE + TITLE_H
                for k in col:
                    pos[k] = [gx, y]
                    y += sizes[k][1] + TITLE_H + GAP
                col_bottoms.append(y - GAP - TITLE_H)
                gx += cw + GAP
            w = max(gx - GAP + GROUP_PAD - x, _text_width(g["title"], 13) + 40)
            h = max(col_bottoms) + GROUP_PAD - y_row
            boxes.append({"title": g["title"], "bounding": [x, y_row, int(w), int(h)]})
            x += int(w) + GAP
            row_h = max(row_h, h)
        y_row += row_h + GAP
    return pos, boxes


# ------------------------------------------------------------------------------------------------ properties
def pack_of(info: dict) -> dict:
    """The pack a node comes from, as the editor reads it from ``properties`` (``cnr_id``/``aux_id``/``ver``: the
    newest front-end names a missing node's pack from them): core, this pack, or a third-party pack declared in
    the twin's ``_ui_only_nodes``."""
    if "cnr_id" in info:
        return {k: info[k] for k in ("cnr_id", "aux_id", "ver") if k in info}
    module = info.get("python_module", "")
    if module.startswith("custom_nodes."):
        return {"cnr_id": PACK["name"], "ver": PACK["version"]}
    return {"cnr_id": "comfy-core", "ver": CORE_VERSION}


def node_properties(class_type: str, info: dict) -> dict:
    return {"Node name for S&R": class_type, **pack_of(info)}


def note_node(node_id: int, text: str, pos, size) -> dict:
    """The template's Markdown note (a front-end node: never in the prompt)."""
    return {"id": node_id, "type": "MarkdownNote", "pos": list(pos), "size": list(size), "flags": {}, "order": 0,
            "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [text],
            "title": "Read me", "color": "#432", "bgcolor": "#653"}


def api_to_ui(prompt: dict, object_info: dict, title: str = "", groups: list | None = None, note: str = "",
              optional: dict | None = None) -> dict:
    """The editor's workflow for an API prompt: ``prompt``'s nodes (ids kept), plus ``optional`` nodes shown
    bypassed (not in the prompt; they may take links from the prompt's nodes), laid out in ``groups`` (see
    :func:`layout`; without groups, one column per depth), with ``note`` as a Markdown note on the left."""
    optional = optional or {}
    graph = {**prompt, **optional}
    ids = {key: int(key) for key in graph}
    nodes, links = [], []
    link_id = 0
    incoming: dict[tuple[int, int], list[int]] = {}
    depth: dict[str, int] = {}

    def node_depth(key: str) -> int:
        if key not in depth:
            ups = [v[0] for v in graph[key]["inputs"].values() if isinstance(v, list) and len(v) == 2]
            depth[key] = 1 + max((node_depth(u) for u in ups), default=-1)
        return depth[key]

    sizes = {}
    for key, node in graph.items():
        info = object_info[node["class_type"]]
        ins = []
        widget_specs = []
        slot_inputs = 0  # the editor gives every non-widget input a slot, optional ones too
        for section in ("required", "optional"):
            for name in info.get("input_order", {}).get(section, []):
                spec = info["input"][section][name]
                value = node["inputs"].get(name)
                linked = isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)
                if _is_widget(spec):
                    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                    widget_specs.append([spec[0], {**opts, "_name": name}])
                else:
                    slot_inputs += 1
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
        widgets = _widget_values(info, node["inputs"])
        node_title = node.get("_meta", {}).get("title") or info.get("display_name", node["class_type"])
        sizes[key] = node_size(node["class_type"], info, node_title,
                               max(slot_inputs, len(info["output"])), widget_specs)
        nodes.append({
            "id": ids[key], "type": node["class_type"], "pos": [0, 0], "size": sizes[key],
            "flags": {}, "order": 0, "mode": 4 if key in optional else 0, "inputs": ins,
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": i}
                        for i, (n, t) in enumerate(zip(info.get("output_name", info["output"]), info["output"]))],
            "properties": node_properties(node["class_type"], info),
            "widgets_values": widgets,
        })
        if node.get("_meta", {}).get("title"):
            nodes[-1]["title"] = node["_meta"]["title"]
    if not groups:  # one column per depth, one group
        cols: dict[int, list] = {}
        for key in sorted(graph, key=node_depth):
            cols.setdefault(node_depth(key), []).append(key)
        groups = [{"title": title or "Workflow", "row": 0, "columns": [cols[d] for d in sorted(cols)]}]
    pos, boxes = layout(groups, sizes, origin=(NOTE_W + 80 if note else 0, 0))
    for n in nodes:
        n["pos"] = pos[str(n["id"])]
        for out in n["outputs"]:
            out["links"] = incoming.get((n["id"], out["slot_index"]), [])
    order = sorted(graph, key=node_depth)
    for n in nodes:
        n["order"] = order.index(str(n["id"]))
    last_id = max(ids.values())
    if note:
        last_id += 1
        nodes.insert(0, note_node(last_id, note, (0, TITLE_H), (NOTE_W, note_height(note))))
    ui_groups = [{"id": i + 1, "title": b["title"], "bounding": b["bounding"], "color": GROUP_COLOR, "font_size": 24,
                  "flags": {}} for i, b in enumerate(boxes)]
    ds = {"scale": VIEW_SCALE, "offset": list(VIEW_OFFSET)}  # the note and the first group in view
    return {"last_node_id": last_id, "last_link_id": link_id, "nodes": nodes, "links": links, "groups": ui_groups,
            "config": {}, "extra": {"ds": ds, "charactershot": {"title": title, "generated_from": "tests/workflows"}},
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


GROUP_COLOR = "#3f789e"


# ------------------------------------------------------------------------------------------------ twins
@dataclass
class Twin:
    """An API twin: ``prompt`` is the template's graph; ``ui_only`` gives /object_info-style specs of third-party
    nodes the test host does not have (DWPose...), with their pack (``cnr_id``, ``aux_id``, ``ver``);
    ``optional`` nodes are in the template only, bypassed (an optional path the note explains); ``fixtures``
    replace, in tests only, nodes that need those or big weights (by node id), so the rest of the graph runs through
    the real host. ``file`` is the template's file name (the card's title in the editor's template browser),
    ``groups`` its stages (see :func:`layout`) and ``note`` the Markdown note (``tests/workflows/<name>.md``)."""

    name: str
    title: str
    prompt: dict
    ui_only: dict = field(default_factory=dict)
    fixtures: dict = field(default_factory=dict)
    file: str = ""
    groups: list = field(default_factory=list)
    optional: dict = field(default_factory=dict)
    note: str = ""

    @property
    def template_path(self) -> Path:
        return OUT / f"{self.file or self.name}.json"

    def template(self, object_info: dict) -> dict:
        return add_model_metadata(api_to_ui(self.prompt, {**object_info, **self.ui_only}, self.title, self.groups,
                                            self.note, self.optional))

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
    path = Path(path)
    data = json.loads(path.read_text())
    title = data.pop("_title", path.stem)
    ui_only = data.pop("_ui_only_nodes", {})
    fixtures = data.pop("_test_fixtures", {})
    file = data.pop("_file", "")
    groups = data.pop("_groups", [])
    optional = data.pop("_optional_nodes", {})
    unknown = [k for k in data if k.startswith("_")]
    if unknown:
        raise ValueError(f"{path}: unknown twin keys {unknown}")
    missing = [k for k in fixtures if k not in data]
    if missing:
        raise ValueError(f"{path}: _test_fixtures replace nodes {missing} that the graph does not have")
    both = sorted(set(optional) & set(data))
    if both:
        raise ValueError(f"{path}: nodes {both} are both in the graph and in _optional_nodes")
    placed = [k for g in groups for col in g["columns"] for k in col]
    if groups and sorted(placed) != sorted([*data, *optional]):
        raise ValueError(f"{path}: _groups must place every node once; placed {sorted(placed)}, nodes "
                         f"{sorted([*data, *optional])}")
    if any(c in file for c in '<>:"/\\|?*'):
        raise ValueError(f"{path}: _file {file!r} is not a file name on every system")
    note_path = path.with_suffix(".md")
    note = note_path.read_text(encoding="utf-8").strip() + "\n" if note_path.is_file() else ""
    return Twin(path.stem, title, data, ui_only, fixtures, file, groups, optional, note)


def twins() -> list[Twin]:
    """Every twin, in the order of the template files (the template browser's order)."""
    return sorted((read_twin(p) for p in TWINS.glob("*.json")), key=lambda t: t.template_path.name)


def template_path(twin_file) -> Path:
    """The template written from the twin ``tests/workflows/<twin_file>``."""
    return read_twin(TWINS / Path(twin_file).name).template_path


# ------------------------------------------------------------------------------------------------ thumbnails
THUMB_SIZE = (512, 384)
PICTURES = REPO / "docs" / "images"
SAMPLES = REPO / "charactershot_core" / "data" / "samples"
# the 4D demo's result (a real fit of the synthetic character, 8 orbit cameras while the motion plays: docs/4d.md)
DEMO_RESULT = PICTURES / "charactershot_demo_result.jpg"
THUMB_KIND = {  # twin -> what its card shows
    "charactershot_prepare_character": "prepared",
    "charactershot_animate_2d": "animation",
}


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _grid(panels: list, cols: int, size=THUMB_SIZE, caption: str = ""):
    """Panels (PIL images) in a grid on white, scaled to fit ``size`` above an optional caption bar."""
    from PIL import Image, ImageDraw

    w, h = size
    bar = 30 if caption else 0
    img = Image.new("RGB", (w, h), (255, 255, 255))
    rows = -(-len(panels) // cols)
    cw, ch = w / cols, (h - bar) / rows
    for i, p in enumerate(panels):
        p = p.convert("RGB")
        sc = min(cw / p.width, ch / p.height)
        q = p.resize((max(1, int(p.width * sc)), max(1, int(p.height * sc))))
        x = int((i % cols) * cw + (cw - q.width) / 2)
        y = int((i // cols) * ch + (ch - q.height) / 2)
        img.paste(q, (x, y))
    if caption:
        d = ImageDraw.Draw(img)
        d.rectangle([0, h - bar, w, h], fill=(32, 34, 40))
        d.text((10, h - bar + 8), caption[:72], fill=(235, 235, 240), font=_font(14))
    return img


def _demo_panels() -> list:
    """The 8 orbit views of the demo's fitted 4D Gaussians (one picture, 8 equal panels side by side)."""
    from PIL import Image

    strip = Image.open(DEMO_RESULT)
    n = 8
    pw = strip.width / n
    return [strip.crop((int(i * pw), 0, int((i + 1) * pw), strip.height)) for i in range(n)]


def _animation_panels() -> list:
    """What the 2D template makes from the samples: the sample poses drawn, over the character's own frames (the
    procedural character rendered in those poses, standing in for the model's output)."""
    import numpy as np
    from PIL import Image

    from charactershot_core.cameras import official_rig
    from charactershot_core.gaussians.synthetic import SyntheticCharacter
    from charactershot_core.poses import draw
    from charactershot_core.poses.keypoints import parse_pose_keypoints

    rig = official_rig().select([0])
    seq = parse_pose_keypoints(json.loads((SAMPLES / "pose_wave.json").read_text()))
    times = [0.0, 0.3, 0.5, 0.7]
    frames = SyntheticCharacter("wave", seed=0, n_gaussians=12000).render_views(rig, times, backend="torch")[0]
    panels = []
    for t, frame in zip(times, frames):
        pose = draw.draw_pose(seq.poses[round(t * (len(seq.poses) - 1))], rig.width, rig.height)
        pose = pose.astype(np.float32) / 255 if pose.dtype == np.uint8 else pose
        crop = slice(10, 450), slice(190, 530)
        panels.append(Image.fromarray((np.clip(pose[crop], 0, 1) * 255).astype(np.uint8)))
        panels.append(Image.fromarray((np.clip(frame[crop], 0, 1) * 255).astype(np.uint8)))
    return panels


def _prepared_panels() -> list:
    """The sample picture and what Prepare Character makes of it (the official 720x480 canvas)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from charactershot_core import canvas

    pic = Image.open(SAMPLES / "character.png")
    rgba = np.asarray(pic.convert("RGBA"))
    res = canvas.prepare_character(rgba[None, ..., :3], rgba[None, ..., 3].astype(np.float32) / 255,
                                   mask_meaning="character")
    out = Image.fromarray(np.asarray(res.images[0]))
    ImageDraw.Draw(out).rectangle([0, 0, out.width - 1, out.height - 1], outline=(120, 120, 120), width=3)
    return [Image.alpha_composite(Image.new("RGBA", pic.size, (200, 200, 200, 255)), pic.convert("RGBA")), out]


def draw_thumbnail(twin: Twin):
    """The card's picture in the template browser: the template's result (see THUMB_KIND) with its title."""
    kind = THUMB_KIND.get(twin.name, "4d")
    caption = (twin.file or twin.name).split(" ", 1)[-1]
    if kind == "prepared":
        return _grid(_prepared_panels(), 2, caption=caption)
    if kind == "animation":
        return _grid(_animation_panels(), 4, caption=caption)
    return _grid(_demo_panels(), 4, caption=caption)


def write_thumbnail(twin: Twin) -> Path:
    path = twin.template_path.with_suffix(".jpg")
    tmp = path.with_name(path.name + ".partial")
    draw_thumbnail(twin).save(tmp, format="JPEG", quality=88)
    tmp.replace(path)
    return path


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    OUT.mkdir(exist_ok=True)
    sys.path.insert(0, str(REPO))
    all_twins = twins()
    if "--thumbnails-only" not in args:
        from tests.comfy_host import ComfyHost

        host = ComfyHost().start()
        try:
            info = host.object_info()
        finally:
            host.stop()
        written = set()
        for twin in all_twins:
            ui = twin.template(info)
            twin.template_path.write_text(json.dumps(ui, indent=1) + "\n")
            written.add(twin.template_path.name)
            print(f"wrote {twin.template_path} ({len(ui['nodes'])} nodes)")
        for old in OUT.glob("*.json"):  # templates of twins renamed or removed
            if old.name not in written:
                old.unlink()
                old.with_suffix(".jpg").unlink(missing_ok=True)
                print(f"removed {old}")
    for twin in all_twins:
        print(f"wrote {write_thumbnail(twin)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
