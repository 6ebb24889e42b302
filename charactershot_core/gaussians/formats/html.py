"""The one-file HTML viewer: the pack's own WebGL2 viewer (web/js/splat4d_data.js, splat4d_viewer.js and the
depth-sort worker splat4d_sort_worker.js) read from the pack at export time and inlined, with a 4D bundle as
base64. Opened from disk (``file://``) it needs no network and no server: the worker runs from a Blob URL made of
its inlined source, the bundle is decoded in the page. Nothing here is a second copy of the viewer in the repository.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re

from ...errors import InputError

# the pack's web/js folder (charactershot_core/gaussians/formats/html.py -> four levels up)
_WEB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                    "web", "js")

_EXPORT = re.compile(r"^export\s+(?=(?:async\s+)?(?:function|class|const|let)\b)", re.M)
_EXPORTED = re.compile(r"^export\s+(?:async\s+)?(?:function\*?|class|const|let)\s+([A-Za-z_$][\w$]*)", re.M)
_IMPORT_DATA = re.compile(r"^import\s*\{([^}]*)\}\s*from\s*\"\./splat4d_data\.js\";\s*$", re.M)
_MODULE_WORKER = re.compile(r"new Worker\(WORKER_URL, \{ type: \"module\", ")
_WORKER_URL = re.compile(r"^const WORKER_URL = new URL\(\"\./splat4d_sort_worker\.js\", import\.meta\.url\);\s*$", re.M)


def _read(folder: str, name: str) -> str:
    path = os.path.join(folder, name)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise InputError("html", f"the viewer source {name} is missing from the pack ({e.strerror})") from None


def _script_safe(js: str) -> str:
    # inside <script>, "</script" (any case) would end the element; "<\/" means the same in JS strings and regexes
    return re.sub(r"</(?=script)", r"<\\/", js, flags=re.I)


def viewer_module(folder: str) -> str:
    """The viewer as one ES module's source (data module in its own scope, the worker source as a Blob URL)."""
    data = _read(folder, "splat4d_data.js")
    viewer = _read(folder, "splat4d_viewer.js")
    worker = _read(folder, "splat4d_sort_worker.js")
    names = _EXPORTED.findall(data)
    imp = _IMPORT_DATA.search(viewer)
    if not names or not imp or not _WORKER_URL.search(viewer) or not _MODULE_WORKER.search(viewer):
        raise InputError("html", "the viewer sources changed shape (imports or worker URL); update formats/html.py")
    data_body = _EXPORT.sub("", data)
    wanted = [x.strip() for x in imp.group(1).split(",") if x.strip()]
    viewer_body = _IMPORT_DATA.sub(f"const {{ {', '.join(wanted)} }} = __charshotData;", viewer)
    viewer_body = _WORKER_URL.sub(
        "const WORKER_URL = URL.createObjectURL(new Blob([__charshotWorkerSource], { type: \"text/javascript\" }));",
        viewer_body)
    # a page opened from file:// has an opaque origin: Chromium refuses module workers from its Blob URLs, so the
    # worker runs as a classic script (its source has no imports; "export" is dropped)
    viewer_body = _MODULE_WORKER.sub("new Worker(WORKER_URL, { ", viewer_body)
    viewer_body = _EXPORT.sub("", viewer_body)
    worker = _EXPORT.sub("", worker)
    return (f"const __charshotWorkerSource = {json.dumps(worker)};\n"
            f"const __charshotData = (() => {{\n{data_body}\nreturn {{ {', '.join(names)} }};\n}})();\n"
            f"{viewer_body}\n")


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>html, body {{ margin: 0; height: 100%; background: #222; }} #charshot {{ position: fixed; inset: 0; }}</style>
</head>
<body>
<div id="charshot"></div>
<script id="charshot-bundle" type="application/octet-stream">{bundle}</script>
<script type="module">
{module}
const root = document.getElementById("charshot");
const viewer = new SplatViewer();
root.appendChild(viewer.root);
window.charshotViewer = viewer;
const text = document.getElementById("charshot-bundle").textContent.trim();
const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
viewer.loadBuffer(bytes.buffer, {name}).then((ok) => {{
  window.charshotLoaded = ok;
  if (ok) viewer.play();
}});
</script>
</body>
</html>
"""


def build_html(bundle: bytes, title: str, folder: str) -> bytes:
    """The page's bytes: ``bundle`` (a ``.cs4d``) inlined as base64 with the viewer from ``folder``."""
    if not bundle or bundle[:4] != b"CS4D":
        raise InputError("html", "expected a CharacterShot 4D bundle to inline")
    module = _script_safe(viewer_module(folder))
    b64 = base64.b64encode(bundle).decode("ascii")
    page = PAGE.format(title=html.escape(title), bundle=b64, module=module, name=json.dumps(title + ".cs4d"))
    return page.encode("utf-8")


def html_bytes(bundle: bytes, title: str = "CharacterShot 4D") -> bytes:
    """Our WebGL2 viewer (web/js/splat4d_data.js, splat4d_sort_worker.js, splat4d_viewer.js, read now and inlined)
    with the bundle as base64: one page that plays the character from disk, no network, no server."""
    return build_html(bundle, title, _WEB)


__all__ = ["build_html", "viewer_module", "html_bytes"]
