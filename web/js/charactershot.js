// CharacterShot for ComfyUI: shows the files a CharacterShot node saved (4D Gaussians, camera rigs) as
// download links under the node. Served as a static file: no CDN, no build step.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const FILE_KEYS = ["charshot_4d", "charshot_files"];
const WIDGET = "charshot_saved_files";

function viewUrl(f) {
  const q = new URLSearchParams({ filename: f.filename, subfolder: f.subfolder || "", type: f.type || "output" });
  return api.apiURL(`/view?${q.toString()}`);
}

function showFiles(node, files) {
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (!widget) {
    const el = document.createElement("div");
    el.style.cssText = "font: 11px monospace; overflow: auto; max-height: 120px; padding: 2px 4px;";
    widget = node.addDOMWidget(WIDGET, "charshot_files", el, {
      serialize: false, // keep it out of the API prompt
      hideOnZoom: false,
      getMinHeight: () => 40,
      hideInPanel: true, // on the node only, never in a newer front-end's side panel
      surfaces: { canvas: "shown", vueNode: "shown", panel: "never" },
    });
    widget.serialize = false; // and out of the workflow's widgets_values
  }
  const el = widget.element;
  el.replaceChildren();
  for (const f of files) {
    const a = document.createElement("a");
    a.href = viewUrl(f);
    a.textContent = (f.subfolder ? `${f.subfolder}/` : "") + f.filename;
    a.download = f.filename;
    a.style.cssText = "display: block; color: #9cf; text-decoration: none;";
    el.appendChild(a);
  }
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "charactershot.savedFiles",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!String(nodeData?.name || "").startsWith("CharacterShot")) return;
    // called by the front-end for the node an `executed` message names, at the root or inside a subgraph ("12:5")
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const r = onExecuted?.apply(this, arguments);
      const files = output ? FILE_KEYS.flatMap((k) => output[k] || []) : [];
      if (files.length) showFiles(this, files);
      return r;
    };
  },
});
