// CharacterShot for ComfyUI: the inline 4D Gaussian preview under Preview 4D, Save 4D Gaussians and Load 4D
// Gaussians. Static files only (no CDN, no build step); the renderer and its worker are found from import.meta.url.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { SplatViewer } from "./splat4d_viewer.js";

const PREVIEW_NODES = new Set(["CharacterShotPreview4D", "CharacterShotSave4DGaussians", "CharacterShotLoad4DGaussians"]);
const WIDGET = "charshot_preview4d";
const MIN_HEIGHT = 320;

function viewUrl(f) {
  const q = new URLSearchParams({ filename: f.filename, subfolder: f.subfolder || "", type: f.type || "output" });
  return api.apiURL(`/view?${q.toString()}`);
}

function nodeClass(node) {
  return String(node?.comfyClass || node?.type || "");
}

export function previewOf(node) {
  return node?._charshotPreview || null;
}

function attachPreview(node) {
  if (node._charshotPreview) return node._charshotPreview;
  const viewer = new SplatViewer();
  const widget = node.addDOMWidget(WIDGET, "charshot_preview4d", viewer.root, {
    serialize: false, // never in the API prompt
    hideOnZoom: false,
    getMinHeight: () => MIN_HEIGHT,
    // Front-ends with a properties side panel (1.3x+) would show every DOM widget there too, moving the one viewer
    // element out of the node: like core's media widgets, this one lives on the node only (the legacy canvas or a
    // Vue node, "Nodes 2.0"). Older front-ends ignore both options.
    hideInPanel: true,
    surfaces: { canvas: "shown", vueNode: "shown", panel: "never" },
  }); // hidden or shown by the editor (display: none, off screen): the viewer's IntersectionObserver follows it
  widget.serialize = false; // never in the workflow's widgets_values
  const cls = nodeClass(node);
  if (!viewer.noWebGL2) viewer.showMessage(cls === "CharacterShotLoad4DGaussians"
    ? "Run the workflow to see the chosen file's 4D bundle here."
    : "No result yet: run the workflow to see the 4D preview here.");
  const preview = { viewer, widget };
  node._charshotPreview = preview;
  const removed = node.onRemoved;
  node.onRemoved = function () {
    viewer.dispose(); // frees the GL context and stops the sort worker
    return removed?.apply(this, arguments);
  };
  const w = Math.max(node.size?.[0] || 0, 420);
  requestAnimationFrame(() => {
    const size = node.computeSize?.() || [w, MIN_HEIGHT];
    node.setSize?.([Math.max(w, size[0]), Math.max(node.size?.[1] || 0, size[1])]);
    node.setDirtyCanvas?.(true, true);
  });
  return preview;
}

function showOutput(node, output) {
  const bundles = output.charshot_preview || [];
  const turntable = output.charshot_turntable || [];
  if (!bundles.length && !turntable.length) return;
  const { viewer } = attachPreview(node);
  viewer.setFallbackFrames(turntable.map(viewUrl));
  if (viewer.noWebGL2) {
    if (!turntable.length) {
      viewer.showMessage("WebGL2 is not available in this browser, so the interactive 4D preview cannot run here. " +
        "Connect a CharacterShot Preview 4D node (turntable_frames > 0) for server-rendered frames.", "warning");
    }
    return;
  }
  if (bundles.length) viewer.loadUrl(viewUrl(bundles[0]), bundles[0].filename);
}

app.registerExtension({
  name: "charactershot.preview4d",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!PREVIEW_NODES.has(nodeData?.name)) return;
    // The front-end finds the node an `executed` message names (a root id "7", or "12:5" for node 5 inside the
    // subgraph node 12, nested to any depth) and calls its onExecuted: no id parsing here.
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const r = onExecuted?.apply(this, arguments);
      if (output && (output.charshot_preview || output.charshot_turntable)) {
        try {
          showOutput(this, output);
        } catch (e) {
          console.error("CharacterShot preview:", e); // never break the rest of the page
        }
      }
      return r;
    };
  },
  nodeCreated(node) {
    if (PREVIEW_NODES.has(nodeClass(node))) attachPreview(node);
  },
});
