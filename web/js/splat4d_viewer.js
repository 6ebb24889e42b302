// CharacterShot 4D preview: a dependency-free WebGL2 renderer for animated 3D Gaussians, with its controls.
// Written for the pack (the design follows the usual instanced-quad splat renderers: one quad per splat, the 3D
// covariance projected with the Jacobian of the perspective, front-to-back blending of depth-sorted splats).
//
// GPU data: a canonical texture (RGBA32UI, 2 texels = 32 bytes per splat: position, RGBA8, covariance as 6 halves)
// uploaded once, and a per-frame texture (positions, plus the covariance when the bundle's rotations or scales
// change over time) that is double-buffered: a frame is written into the texture that is not drawn, and becomes
// visible only when the worker has sent the depth order made for that frame (until then the old frame stays).

import { DEFAULT_MAX_SPLATS, ViewerError, packCanonical, packFrame, parseScene } from "./splat4d_data.js";

const WORKER_URL = new URL("./splat4d_sort_worker.js", import.meta.url);
const TEX_WIDTH = 2048;
const FRAME_CACHE_BYTES = 160 * 1024 * 1024;

const VERT = `#version 300 es
precision highp float;
precision highp int;
precision highp usampler2D;
uniform usampler2D u_canon;
uniform usampler2D u_frame;
uniform usampler2D u_order;
uniform mat4 u_view;
uniform mat4 u_proj;
uniform vec2 u_viewport;
uniform vec2 u_focal;
uniform uint u_stride;
out vec4 v_color;
out vec2 v_pos;
ivec2 texel(uint t) { return ivec2(int(t & 2047u), int(t >> 11u)); }
void main() {
  // one indexed draw, 4 vertices per splat (no instancing: software WebGL runs each instance as a separate draw)
  uint vid = uint(gl_VertexID);
  uint slot = vid >> 2u;
  vec2 a_corner = vec2(float(vid & 1u) * 2.0 - 1.0, float((vid >> 1u) & 1u) * 2.0 - 1.0);
  uint i = texelFetch(u_order, texel(slot), 0).x; // the depth order, near to far
  uvec4 c0 = texelFetch(u_canon, texel(2u * i), 0);
  uvec4 f0 = texelFetch(u_frame, texel(u_stride * i), 0);
  uvec4 cv = u_stride == 2u ? texelFetch(u_frame, texel(2u * i + 1u), 0) : texelFetch(u_canon, texel(2u * i + 1u), 0);
  vec4 cam = u_view * vec4(uintBitsToFloat(f0.xyz), 1.0);
  float z = -cam.z;
  gl_Position = vec4(0.0, 0.0, 2.0, 1.0);
  if (z < 0.01) return;
  vec4 clip = u_proj * cam;
  vec2 ndc = clip.xy / clip.w;
  if (abs(ndc.x) > 1.3 || abs(ndc.y) > 1.3) return;
  vec2 h0 = unpackHalf2x16(cv.x), h1 = unpackHalf2x16(cv.y), h2 = unpackHalf2x16(cv.z);
  mat3 S = mat3(h0.x, h0.y, h1.x, h0.y, h1.y, h2.x, h1.x, h2.x, h2.y);
  mat3 J = mat3(u_focal.x / z, 0.0, 0.0, 0.0, u_focal.y / z, 0.0,
                u_focal.x * cam.x / (z * z), u_focal.y * cam.y / (z * z), 0.0);
  mat3 T = J * mat3(u_view);
  mat3 C = T * S * transpose(T);
  float a = C[0][0] + 0.3, b = C[0][1], d = C[1][1] + 0.3;
  float mid = 0.5 * (a + d), rad = length(vec2(0.5 * (a - d), b));
  float l1 = mid + rad, l2 = max(mid - rad, 0.05);
  vec2 e1 = abs(b) > 1e-9 ? normalize(vec2(b, l1 - a)) : (a >= d ? vec2(1.0, 0.0) : vec2(0.0, 1.0));
  vec2 ax1 = min(3.0 * sqrt(l1), 1024.0) * e1;
  vec2 ax2 = min(3.0 * sqrt(l2), 1024.0) * vec2(-e1.y, e1.x);
  uint rgba = c0.w;
  v_color = vec4(float(rgba & 255u), float((rgba >> 8u) & 255u), float((rgba >> 16u) & 255u), float(rgba >> 24u)) / 255.0;
  v_pos = 3.0 * a_corner;
  gl_Position = vec4(ndc + (a_corner.x * ax1 + a_corner.y * ax2) * 2.0 / u_viewport, 0.0, 1.0);
}`;

const FRAG = `#version 300 es
precision highp float;
in vec4 v_color;
in vec2 v_pos;
out vec4 fragColor;
void main() {
  // no discard: a zero-alpha fragment adds nothing with front-to-back blending, and branches cost in software GL
  float alpha = min(0.99, v_color.a * exp(-0.5 * dot(v_pos, v_pos)));
  alpha = alpha < 1.0 / 255.0 ? 0.0 : alpha;
  fragColor = vec4(v_color.rgb * alpha, alpha);
}`;

const BG_VERT = `#version 300 es
void main() { vec2 p = vec2(float((gl_VertexID << 1) & 2), float(gl_VertexID & 2)); gl_Position = vec4(p * 2.0 - 1.0, 0.0, 1.0); }`;
const BG_FRAG = `#version 300 es
precision highp float;
uniform vec3 u_bg;
out vec4 fragColor;
void main() { fragColor = vec4(u_bg, 1.0); }`;

// ------------------------------------------------------------------------------------------------ matrices
function lookAt(eye, target, up) {
  let fx = target[0] - eye[0], fy = target[1] - eye[1], fz = target[2] - eye[2];
  const fl = Math.hypot(fx, fy, fz) || 1;
  fx /= fl; fy /= fl; fz /= fl;
  let sx = fy * up[2] - fz * up[1], sy = fz * up[0] - fx * up[2], sz = fx * up[1] - fy * up[0];
  const sl = Math.hypot(sx, sy, sz) || 1;
  sx /= sl; sy /= sl; sz /= sl;
  const ux = sy * fz - sz * fy, uy = sz * fx - sx * fz, uz = sx * fy - sy * fx;
  return new Float32Array([
    sx, ux, -fx, 0, sy, uy, -fy, 0, sz, uz, -fz, 0,
    -(sx * eye[0] + sy * eye[1] + sz * eye[2]), -(ux * eye[0] + uy * eye[1] + uz * eye[2]),
    fx * eye[0] + fy * eye[1] + fz * eye[2], 1,
  ]);
}

function projection(p00, p11, p20, p21, near, far) {
  return new Float32Array([p00, 0, 0, 0, 0, p11, 0, 0, p20, p21, -(far + near) / (far - near), -1,
    0, 0, (-2 * far * near) / (far - near), 0]);
}

// camera-to-world (row-major 4x4, OpenGL camera) -> world-to-camera, column-major
function rigidInverse(m) {
  const r = [[m[0][0], m[0][1], m[0][2]], [m[1][0], m[1][1], m[1][2]], [m[2][0], m[2][1], m[2][2]]];
  const t = [m[0][3], m[1][3], m[2][3]];
  const out = new Float32Array(16);
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 3; j++) out[j * 4 + i] = r[j][i]; // (R^T)[i][j] = R[j][i], column-major index j*4+i
    out[12 + i] = -(r[0][i] * t[0] + r[1][i] * t[1] + r[2][i] * t[2]);
  }
  out[15] = 1;
  return out;
}

function el(tag, css, props = {}) {
  const e = document.createElement(tag);
  if (css) e.style.cssText = css;
  Object.assign(e, props);
  return e;
}

const BUTTON_CSS = "font: 11px sans-serif; padding: 1px 5px; background: #333; color: #ddd; border: 1px solid #555; " +
  "border-radius: 3px; cursor: pointer; min-width: 22px;";

// -------------------------------------------------------------------------------------------------- viewer
export class SplatViewer {
  constructor({ maxSplats = DEFAULT_MAX_SPLATS, background = [1, 1, 1], fps = 12 } = {}) {
    this.maxSplats = maxSplats;
    this.backgrounds = [[1, 1, 1], [0.1, 0.1, 0.12], [0.5, 0.5, 0.5]];
    this.background = background;
    this.fps = fps;
    this.scene = null;
    this.playing = false;
    this.displayedFrame = -1;
    this.wantFrame = 0;
    this.backFrame = -1;
    this.inflight = null;
    this.viewId = 1;
    this.sortedViewId = 0;
    this.snapped = null;
    this.cam = { target: [0, 0, 0.9], az: 0, el: 0.15, dist: 3.5, fovy: (40 * Math.PI) / 180 };
    this.stats = { draws: 0, framesShown: 0, sorts: 0, sortMs: 0, sortMsAll: [], lastDrawMs: 0 };
    this.visible = true;
    this.disposed = false;
    this.message = "";
    this.frameCache = new Map();
    this.frameCacheBytes = 0;
    this._raf = 0;
    this._lastAdvance = 0;
    this._buildDom();
    this._initGL();
  }

  // --------------------------------------------------------------------------------------------- DOM
  _buildDom() {
    const root = el("div", "position: relative; display: flex; flex-direction: column; width: 100%; height: 100%; " +
      "background: #222; outline: none; box-sizing: border-box; overflow: hidden;", { tabIndex: 0 });
    root.className = "charshot-preview4d";
    // min-height: a front-end that lays the widget out by its content (1.32.9's Vue nodes, "Nodes 2.0") would
    // otherwise squash the picture to a strip; on the canvas the node's widget is always taller than this
    const stage = el("div", "position: relative; flex: 1 1 auto; min-height: 240px;");
    const canvas = el("canvas", "position: absolute; inset: 0; width: 100%; height: 100%; display: block; touch-action: none;");
    const img = el("img", "position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain; display: none; background: #fff;");
    const msg = el("div", "position: absolute; left: 6px; right: 6px; top: 6px; font: 12px sans-serif; color: #eee; " +
      "background: rgba(40,40,40,0.85); padding: 6px 8px; border-radius: 4px; display: none; white-space: pre-wrap;");
    msg.className = "charshot-preview4d-message";
    stage.append(canvas, img, msg);
    const bar = el("div", "display: flex; gap: 4px; align-items: center; padding: 3px 2px; flex: 0 0 auto; " +
      "font: 11px sans-serif; color: #ccc; flex-wrap: wrap;");
    const play = el("button", BUTTON_CSS, { textContent: "▶", title: "Play / pause (space)" });
    const slider = el("input", "flex: 1 1 80px; min-width: 60px;", { type: "range", min: 0, max: 0, value: 0, step: 1, title: "Frame (← →)" });
    const label = el("span", "min-width: 44px; text-align: right;", { textContent: "–" });
    const fps = el("select", "font: 11px sans-serif; background: #333; color: #ddd;", { title: "Playback speed" });
    for (const f of [6, 12, 24, 30, 60]) fps.append(el("option", "", { value: String(f), textContent: `${f} fps` }));
    fps.value = String(this.fps);
    const camSel = el("select", "font: 11px sans-serif; background: #333; color: #ddd; max-width: 92px;", { title: "Snap to a training camera" });
    const fit = el("button", BUTTON_CSS, { textContent: "Fit", title: "Frame the whole character (f)" });
    const bg = el("button", BUTTON_CSS, { textContent: "BG", title: "Background colour (b)" });
    const info = el("span", "width: 100%; color: #999; font-size: 10px;", { textContent: "" });
    info.className = "charshot-preview4d-info";
    bar.append(play, slider, label, fps, camSel, fit, bg, info);
    root.append(stage, bar);
    Object.assign(this, { root, stage, canvas, img, msgEl: msg, bar, ui: { play, slider, label, fps, camSel, fit, bg, info } });

    play.onclick = () => (this.playing ? this.pause() : this.play());
    slider.oninput = () => { this.pause(); this.setFrame(Number(slider.value)); };
    fps.onchange = () => { this.fps = Number(fps.value); };
    camSel.onchange = () => { if (camSel.value === "orbit") this.unsnap(); else this.snapToCamera(Number(camSel.value)); };
    fit.onclick = () => this.fit();
    bg.onclick = () => this.toggleBackground();
    this._bindInput();

    // stop drawing while hidden (node off screen, collapsed, tab hidden)
    this._io = new IntersectionObserver((entries) => {
      for (const e of entries) this._setVisible(e.isIntersecting);
    });
    this._io.observe(stage);
    this._onVis = () => this._setVisible(!document.hidden && this._intersecting !== false);
    document.addEventListener("visibilitychange", this._onVis);
    this._ro = new ResizeObserver(() => this.requestRender());
    this._ro.observe(stage);
  }

  _setVisible(v) {
    this._intersecting = v;
    this.visible = v && !document.hidden;
    if (this.visible) this.requestRender();
    else if (this._raf) { cancelAnimationFrame(this._raf); this._raf = 0; }
    this._updateFallback();
  }

  _bindInput() {
    const c = this.canvas, root = this.root;
    let drag = null;
    const stop = (e) => e.stopPropagation();
    c.addEventListener("pointerdown", (e) => {
      root.focus({ preventScroll: true });
      drag = { x: e.clientX, y: e.clientY, pan: e.button === 2 || e.button === 1 || e.shiftKey };
      c.setPointerCapture(e.pointerId);
      e.preventDefault(); stop(e);
    });
    c.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      drag.x = e.clientX; drag.y = e.clientY;
      if (drag.pan) this.pan(dx, dy); else this.orbit(dx, dy);
      e.preventDefault(); stop(e);
    });
    const end = (e) => { drag = null; stop(e); };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("contextmenu", (e) => { e.preventDefault(); stop(e); });
    c.addEventListener("dblclick", (e) => { this.fit(); stop(e); });
    c.addEventListener("wheel", (e) => { this.zoom(Math.exp(e.deltaY * 0.0015)); e.preventDefault(); stop(e); }, { passive: false });
    for (const type of ["pointerdown", "pointerup", "mousedown", "mouseup", "click", "wheel"]) {
      this.bar.addEventListener(type, stop);
    }
    // keyboard: the widget's own shortcuts, and nothing reaches the graph editor while the widget has focus
    const onKey = (e) => {
      e.stopPropagation();
      if (e.type !== "keydown") return;
      const tag = e.target?.tagName;
      if (tag === "SELECT" || tag === "INPUT") return; // their own keys (arrows) work as usual
      const k = e.key;
      if (k === " ") { this.playing ? this.pause() : this.play(); e.preventDefault(); }
      else if (k === "ArrowRight") { this.pause(); this.setFrame(this._frameIndex() + 1); e.preventDefault(); }
      else if (k === "ArrowLeft") { this.pause(); this.setFrame(this._frameIndex() - 1); e.preventDefault(); }
      else if (k === "f" || k === "F") this.fit();
      else if (k === "b" || k === "B") this.toggleBackground();
    };
    for (const type of ["keydown", "keyup", "keypress"]) root.addEventListener(type, onKey);
  }

  showMessage(text, kind = "info") {
    this.message = text || "";
    this.messageKind = kind;
    this.msgEl.textContent = this.message;
    this.msgEl.style.display = this.message ? "block" : "none";
    this.msgEl.style.background = kind === "error" ? "rgba(120,30,30,0.9)" : "rgba(40,40,40,0.85)";
    this.msgEl.dataset.kind = kind;
  }

  // ---------------------------------------------------------------------------------------------- GL
  _initGL() {
    let gl = null;
    try {
      gl = this.canvas.getContext("webgl2", { alpha: true, premultipliedAlpha: true, antialias: false, depth: false,
        stencil: false, preserveDrawingBuffer: false, powerPreference: "high-performance" });
    } catch (e) {
      gl = null;
    }
    if (!gl) {
      this.gl = null;
      this.noWebGL2 = true;
      this.canvas.style.display = "none";
      this.showMessage("WebGL2 is not available in this browser, so the interactive 4D preview cannot run here. " +
        "Showing the server-rendered turntable instead (when the node has one).", "warning");
      return;
    }
    this.gl = gl;
    const compile = (type, src) => {
      const s = gl.createShader(type);
      gl.shaderSource(s, src);
      gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
      return s;
    };
    const link = (vs, fs) => {
      const p = gl.createProgram();
      const a = compile(gl.VERTEX_SHADER, vs), b = compile(gl.FRAGMENT_SHADER, fs);
      gl.attachShader(p, a); gl.attachShader(p, b);
      gl.linkProgram(p);
      gl.deleteShader(a); gl.deleteShader(b);
      if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(p));
      return p;
    };
    this.prog = link(VERT, FRAG);
    this.bgProg = link(BG_VERT, BG_FRAG);
    this.loc = {};
    for (const u of ["u_canon", "u_frame", "u_order", "u_view", "u_proj", "u_viewport", "u_focal", "u_stride"]) {
      this.loc[u] = gl.getUniformLocation(this.prog, u);
    }
    this.loc.u_bg = gl.getUniformLocation(this.bgProg, "u_bg");
    this.vao = gl.createVertexArray();
    gl.bindVertexArray(this.vao);
    gl.bindVertexArray(null);
    this.bgVao = gl.createVertexArray();
    this.canvas.addEventListener("webglcontextlost", (e) => {
      e.preventDefault();
      if (!this.disposed) this.showMessage("The browser dropped the WebGL context (too many 3D views open?). Run the node again to reload the preview.", "error");
    });
  }

  _texture(width, rows, format) {
    const gl = this.gl;
    const t = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, t);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    gl.texStorage2D(gl.TEXTURE_2D, 1, format || gl.RGBA32UI, width, rows);
    return t;
  }

  _freeSceneGL() {
    const gl = this.gl;
    if (!gl) return;
    for (const t of [this.canonTex, this.orderTex, ...(this.frameTex || [])]) if (t) gl.deleteTexture(t);
    this.canonTex = null;
    this.orderTex = null;
    this.frameTex = null;
  }

  // -------------------------------------------------------------------------------------------- data
  async loadUrl(url, name = "") {
    if (this.disposed) return;
    this.showMessage("Loading the 4D preview…");
    let resp;
    try {
      resp = await fetch(url, { cache: "no-store" });
    } catch (e) {
      this.showMessage(`Cannot reach the server to load the preview (${e.message}).`, "error");
      return false;
    }
    if (!resp.ok) {
      const hint = resp.status === 404 ? " The file is missing (ComfyUI empties its temp folder when it restarts): run the workflow again." : "";
      this.showMessage(`The 4D preview file could not be loaded (HTTP ${resp.status}).${hint}`, "error");
      return false;
    }
    const buffer = await resp.arrayBuffer();
    return this.loadBuffer(buffer, name || url);
  }

  async loadBuffer(buffer, name = "") {
    if (this.disposed) return false;
    const token = (this._loadToken = (this._loadToken || 0) + 1);
    let scene;
    try {
      scene = await parseScene(buffer, name, { maxSplats: this.maxSplats });
    } catch (e) {
      if (token !== this._loadToken) return false;
      const text = e instanceof ViewerError ? e.message : `The preview could not be read: ${e.message || e}`;
      this.showMessage(text, "error");
      this.error = e;
      return false;
    }
    if (token !== this._loadToken || this.disposed) return false;
    this.error = null;
    this.setScene(scene);
    return true;
  }

  setScene(scene) {
    this.scene = scene;
    this.frameCache.clear();
    this.frameCacheBytes = 0;
    const n = scene.count;
    this.ui.slider.max = String(Math.max(0, scene.frames - 1));
    this.ui.slider.value = "0";
    this.ui.slider.disabled = scene.frames < 2;
    this.ui.play.disabled = scene.frames < 2;
    const cams = scene.meta?.cameras?.views || [];
    this.ui.camSel.replaceChildren(el("option", "", { value: "orbit", textContent: "orbit" }));
    cams.forEach((v, k) => this.ui.camSel.append(el("option", "", { value: String(k), textContent: `view ${k}` })));
    this.ui.camSel.disabled = cams.length === 0;
    let info = `${n.toLocaleString("en")} splats · ${scene.frames} frame${scene.frames > 1 ? "s" : ""}`;
    if (scene.stride > 1) {
      info = `showing ${n.toLocaleString("en")} of ${scene.total.toLocaleString("en")} splats (every ${scene.stride}th: ` +
        `decimated to keep the page responsive) · ${scene.frames} frames`;
    }
    this.ui.info.textContent = info;
    this.displayedFrame = -1;
    this.backFrame = -1;
    this.wantFrame = 0;
    this.inflight = null;
    this.sortedViewId = 0;
    this.worker?.terminate(); // the old scene's worker must not sort for the new one
    this.worker = null;
    this.fit(false);
    if (scene.stride > 1) {
      this.showMessage(`Large preview: ${scene.total.toLocaleString("en")} splats, showing every ${scene.stride}th ` +
        `(${n.toLocaleString("en")}).`, "warning");
    } else this.showMessage("");
    if (!this.gl) { this._updateFallback(); return; }
    const gl = this.gl;
    this._freeSceneGL();
    this.texelsPerSplat = scene.dynamicShape ? 2 : 1;
    const canon = packCanonical(scene, TEX_WIDTH);
    this.canonTex = this._texture(TEX_WIDTH, canon.rows);
    gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, TEX_WIDTH, canon.rows, gl.RGBA_INTEGER, gl.UNSIGNED_INT, canon.data);
    this.frameRows = Math.max(1, Math.ceil((n * this.texelsPerSplat) / TEX_WIDTH));
    this.frameTex = [this._texture(TEX_WIDTH, this.frameRows), this._texture(TEX_WIDTH, this.frameRows)];
    this.front = 0;
    this.frameScratch = new Uint32Array(TEX_WIDTH * this.frameRows * 4);
    // the sort order as an R32UI texture read with gl_InstanceID (instanced integer attributes are emulated,
    // and slow, on some WebGL2 implementations such as the software SwiftShader)
    this.orderRows = Math.max(1, Math.ceil(n / TEX_WIDTH));
    this.orderTex = this._texture(TEX_WIDTH, this.orderRows, gl.R32UI);
    this.orderScratch = new Uint32Array(TEX_WIDTH * this.orderRows);
    const idx = new Uint32Array(6 * n); // two triangles per splat over its 4 corner vertices
    for (let j = 0, v = 0; j < 6 * n; j += 6, v += 4) {
      idx[j] = v; idx[j + 1] = v + 1; idx[j + 2] = v + 2; idx[j + 3] = v + 2; idx[j + 4] = v + 1; idx[j + 5] = v + 3;
    }
    gl.bindVertexArray(this.vao);
    if (!this.quadIndex) this.quadIndex = gl.createBuffer();
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, this.quadIndex);
    gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, idx, gl.STATIC_DRAW);
    gl.bindVertexArray(null);
    this._startWorker();
    this._pump();
  }

  _startWorker() {
    if (this.worker) this.worker.terminate();
    const s = this.scene;
    this.worker = new Worker(WORKER_URL, { type: "module", name: "charactershot-sort" });
    this.worker.onmessage = (e) => this._onWorker(e.data);
    this.worker.onerror = (e) => this.showMessage(`The sort worker failed: ${e.message || "unknown error"}`, "error");
    const qpos = s.pos.q.slice();
    this.worker.postMessage({ type: "init", count: s.count, frames: s.frames, qpos, min: s.pos.min, step: s.pos.step },
      [qpos.buffer]);
  }

  _frameData(t) {
    let d = this.frameCache.get(t);
    if (d) return d;
    const size = this.scene.count * this.texelsPerSplat * 4;
    const canCache = this.frameCacheBytes + size * 4 <= FRAME_CACHE_BYTES;
    d = packFrame(this.scene, t, canCache ? new Uint32Array(TEX_WIDTH * this.frameRows * 4) : this.frameScratch, this.texelsPerSplat);
    if (canCache) { this.frameCache.set(t, d); this.frameCacheBytes += d.byteLength; }
    return d;
  }

  _pump() {
    if (!this.scene || !this.gl || !this.worker || this.inflight) return;
    const f = this.wantFrame;
    const needFrame = f !== this.displayedFrame;
    if (!needFrame && this.sortedViewId === this.viewId) return;
    if (needFrame && this.backFrame !== f) {
      const gl = this.gl;
      gl.bindTexture(gl.TEXTURE_2D, this.frameTex[1 - this.front]); // never the texture being drawn
      gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, TEX_WIDTH, this.frameRows, gl.RGBA_INTEGER, gl.UNSIGNED_INT, this._frameData(f));
      this.backFrame = f;
    }
    const view = this._viewMatrix();
    this.inflight = { frame: f, viewId: this.viewId };
    this.worker.postMessage({ type: "sort", frame: f, view, viewId: this.viewId });
  }

  _onWorker(msg) {
    if (msg.type !== "order" || this.disposed || !this.scene) return;
    this.inflight = null;
    if (msg.order.length !== this.scene.count) { this._pump(); return; }
    this.stats.sorts++;
    this.stats.sortMs = msg.ms;
    this.stats.sortMsAll.push(msg.ms);
    if (this.stats.sortMsAll.length > 200) this.stats.sortMsAll.shift();
    let use = false;
    if (msg.frame === this.backFrame && msg.frame !== this.displayedFrame) {
      this.front = 1 - this.front; // the new frame's data and its own order: show them together
      this.displayedFrame = msg.frame;
      this.backFrame = -1;
      this.stats.framesShown++;
      this._syncFrameUi();
      use = true;
    } else if (msg.frame === this.displayedFrame) use = true;
    if (use) {
      const gl = this.gl;
      this.orderScratch.set(msg.order);
      gl.bindTexture(gl.TEXTURE_2D, this.orderTex);
      gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, TEX_WIDTH, this.orderRows, gl.RED_INTEGER, gl.UNSIGNED_INT, this.orderScratch);
      this.sortedViewId = msg.viewId;
      if (this.message === "Loading the 4D preview…") this.showMessage("");
    }
    this.worker.postMessage({ type: "recycle", buffer: msg.order }, [msg.order.buffer]);
    this.requestRender();
    this._pump();
  }

  _frameIndex() {
    return this.wantFrame ?? Math.max(0, this.displayedFrame);
  }

  _syncFrameUi() {
    const s = this.scene;
    if (!s) return;
    const f = Math.max(0, this.displayedFrame);
    if (document.activeElement !== this.ui.slider) this.ui.slider.value = String(f);
    this.ui.label.textContent = `${f + 1}/${s.frames}`;
  }

  // ------------------------------------------------------------------------------------------ controls
  setFrame(f) {
    if (!this.scene) return;
    const T = this.scene.frames;
    this.wantFrame = ((Math.round(f) % T) + T) % T;
    this.ui.slider.value = String(this.wantFrame);
    this._pump();
    this._updateFallback();
  }

  play() {
    if (!this.scene || this.scene.frames < 2) return;
    this.playing = true;
    this.ui.play.textContent = "❚❚";
    this._lastAdvance = performance.now();
    this.requestRender();
  }

  pause() {
    this.playing = false;
    this.ui.play.textContent = "▶";
  }

  toggleBackground() {
    const i = this.backgrounds.findIndex((b) => b.every((v, k) => v === this.background[k]));
    this.background = this.backgrounds[(i + 1) % this.backgrounds.length];
    this.requestRender();
  }

  _changed() {
    this.viewId++;
    this._pump();
    this.requestRender();
  }

  unsnap() {
    if (!this.snapped) return;
    this.snapped = null;
    this.ui.camSel.value = "orbit";
    this._changed();
  }

  _center() {
    const b = this.scene?.bounds;
    if (!b) return { c: [0, 0, 0.9], r: 1 };
    const c = [0, 1, 2].map((i) => 0.5 * (b.min[i] + b.max[i]));
    const r = 0.5 * Math.hypot(b.max[0] - b.min[0], b.max[1] - b.min[1], b.max[2] - b.min[2]);
    return { c, r: Math.max(r, 1e-3) };
  }

  fit(keepAngles = true) {
    const { c, r } = this._center();
    this.snapped = null;
    this.ui.camSel.value = "orbit";
    this.cam.target = c;
    const aspect = this._aspect();
    const half = Math.min(this.cam.fovy / 2, Math.atan(Math.tan(this.cam.fovy / 2) * aspect));
    this.cam.dist = (r / Math.sin(half)) * 1.02;
    if (!keepAngles) { this.cam.az = 0; this.cam.el = 0.15; }
    this._changed();
  }

  orbit(dx, dy) {
    this._leaveSnap();
    this.cam.az -= dx * 0.008;
    this.cam.el = Math.max(-1.5, Math.min(1.5, this.cam.el + dy * 0.008));
    this._changed();
  }

  pan(dx, dy) {
    this._leaveSnap();
    const h = Math.max(1, this.canvas.clientHeight);
    const k = (2 * this.cam.dist * Math.tan(this.cam.fovy / 2)) / h;
    const v = this._viewMatrix();
    const right = [v[0], v[4], v[8]], up = [v[1], v[5], v[9]];
    for (let i = 0; i < 3; i++) this.cam.target[i] += (-dx * right[i] + dy * up[i]) * k;
    this._changed();
  }

  zoom(factor) {
    this._leaveSnap();
    this.cam.dist = Math.max(0.05, Math.min(1000, this.cam.dist * factor));
    this._changed();
  }

  _leaveSnap() {
    if (!this.snapped) return;
    this.snapped = null;
    this.ui.camSel.value = "orbit";
  }

  cameras() {
    return this.scene?.meta?.cameras || null;
  }

  snapToCamera(k) {
    const rig = this.cameras();
    const v = rig?.views?.[k];
    if (!v) return false;
    const m = v.transform_matrix;
    const eye = [m[0][3], m[1][3], m[2][3]];
    const fwd = [-m[0][2], -m[1][2], -m[2][2]];
    const { c } = this._center();
    const dist = Math.max(0.05, (c[0] - eye[0]) * fwd[0] + (c[1] - eye[1]) * fwd[1] + (c[2] - eye[2]) * fwd[2]);
    this.cam.target = [eye[0] + fwd[0] * dist, eye[1] + fwd[1] * dist, eye[2] + fwd[2] * dist];
    this.cam.dist = dist;
    this.cam.az = Math.atan2(eye[0] - this.cam.target[0], -(eye[1] - this.cam.target[1]));
    this.cam.el = Math.asin(Math.max(-1, Math.min(1, (eye[2] - this.cam.target[2]) / dist)));
    const W = rig.canvas_width || 720, H = rig.canvas_height || 480;
    this.snapped = { k, view: rigidInverse(m), fx: v.fl_x, fy: v.fl_y, cx: v.cx ?? W / 2, cy: v.cy ?? H / 2, W, H };
    const rect = this.snapRect();
    if (rect) this.cam.fovy = 2 * Math.atan((this.canvas.clientHeight || rect.h) / 2 / ((rect.w / W) * v.fl_y));
    this.ui.camSel.value = String(k);
    this._changed();
    return true;
  }

  // where the snapped training camera's image lies in the canvas (CSS pixels = drawing pixels, DPR 1)
  snapRect() {
    const s = this.snapped;
    if (!s) return null;
    const [Wc, Hc] = this._size();
    const k = Math.min(Wc / s.W, Hc / s.H);
    return { x: (Wc - k * s.W) / 2, y: (Hc - k * s.H) / 2, w: k * s.W, h: k * s.H, scale: k };
  }

  _size() {
    return [Math.max(1, Math.floor(this.stage.clientWidth)), Math.max(1, Math.floor(this.stage.clientHeight))];
  }

  _aspect() {
    const [w, h] = this._size();
    return w / h;
  }

  _viewMatrix() {
    if (this.snapped) return this.snapped.view;
    const { target, az, el: e, dist } = this.cam;
    const eye = [target[0] + dist * Math.sin(az) * Math.cos(e), target[1] - dist * Math.cos(az) * Math.cos(e),
      target[2] + dist * Math.sin(e)];
    return lookAt(eye, target, [0, 0, 1]);
  }

  _projMatrix(Wc, Hc) {
    const r = this._center().r;
    const near = Math.max(0.01, (this.cam.dist - 4 * r) * 0.5), far = this.cam.dist + 8 * r + 10;
    const s = this.snapped;
    if (s) {
      const rect = this.snapRect();
      const k = rect.scale;
      return projection((2 * k * s.fx) / Wc, (2 * k * s.fy) / Hc, 1 - (2 * (rect.x + k * s.cx)) / Wc,
        (2 * (rect.y + k * s.cy)) / Hc - 1, near, far);
    }
    const f = 1 / Math.tan(this.cam.fovy / 2);
    return projection(f * (Hc / Wc), f, 0, 0, near, far);
  }

  // ---------------------------------------------------------------------------------------- drawing
  requestRender() {
    if (this.disposed || !this.visible || this._raf) return;
    this._raf = requestAnimationFrame((now) => this._tick(now));
  }

  _tick(now) {
    this._raf = 0;
    if (this.disposed || !this.visible) return;
    if (this.playing && this.scene && this.scene.frames > 1) {
      const due = now - this._lastAdvance >= 1000 / this.fps;
      if (due && this.wantFrame === this.displayedFrame) {
        this._lastAdvance = now;
        this.setFrame(this.displayedFrame + 1);
      }
    }
    this.draw();
    if (this.playing) this.requestRender();
  }

  draw() {
    const gl = this.gl;
    if (!gl || this.disposed || gl.isContextLost()) return;
    const t0 = performance.now();
    const [Wc, Hc] = this._size();
    if (this.canvas.width !== Wc || this.canvas.height !== Hc) {
      this.canvas.width = Wc; // device pixel ratio capped at 1 inside the node
      this.canvas.height = Hc;
    }
    gl.viewport(0, 0, Wc, Hc);
    gl.disable(gl.DEPTH_TEST);
    gl.clearColor(0, 0, 0, 0);
    gl.clear(gl.COLOR_BUFFER_BIT);
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.ONE_MINUS_DST_ALPHA, gl.ONE); // front to back: splats arrive sorted near to far
    if (this.scene && this.displayedFrame >= 0 && this.frameTex) {
      const proj = this._projMatrix(Wc, Hc);
      gl.useProgram(this.prog);
      gl.uniformMatrix4fv(this.loc.u_view, false, this._viewMatrix());
      gl.uniformMatrix4fv(this.loc.u_proj, false, proj);
      gl.uniform2f(this.loc.u_viewport, Wc, Hc);
      gl.uniform2f(this.loc.u_focal, (proj[0] * Wc) / 2, (proj[5] * Hc) / 2);
      gl.uniform1ui(this.loc.u_stride, this.texelsPerSplat);
      gl.activeTexture(gl.TEXTURE0);
      gl.bindTexture(gl.TEXTURE_2D, this.canonTex);
      gl.uniform1i(this.loc.u_canon, 0);
      gl.activeTexture(gl.TEXTURE1);
      gl.bindTexture(gl.TEXTURE_2D, this.frameTex[this.front]);
      gl.uniform1i(this.loc.u_frame, 1);
      gl.activeTexture(gl.TEXTURE2);
      gl.bindTexture(gl.TEXTURE_2D, this.orderTex);
      gl.uniform1i(this.loc.u_order, 2);
      gl.bindVertexArray(this.vao);
      gl.drawElements(gl.TRIANGLES, 6 * this.scene.count, gl.UNSIGNED_INT, 0);
      gl.bindVertexArray(null);
      gl.activeTexture(gl.TEXTURE0);
    }
    gl.useProgram(this.bgProg); // the background fills what the splats left uncovered
    gl.uniform3f(this.loc.u_bg, ...this.background);
    gl.bindVertexArray(this.bgVao);
    gl.drawArrays(gl.TRIANGLES, 0, 3);
    gl.bindVertexArray(null);
    this.stats.draws++;
    this.stats.lastDrawMs = performance.now() - t0;
  }

  // Draw now and read the canvas back (RGBA, top row first): for tests and benchmarks.
  capture() {
    const gl = this.gl;
    if (!gl) return null;
    this.draw();
    const w = this.canvas.width, h = this.canvas.height;
    const px = new Uint8Array(w * h * 4);
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
    const out = new Uint8Array(w * h * 4);
    for (let y = 0; y < h; y++) out.set(px.subarray((h - 1 - y) * w * 4, (h - y) * w * 4), y * w * 4);
    return { width: w, height: h, data: out };
  }

  // Steady frame time: n draws of the current frame, each finished (a 1-pixel read waits for the GPU).
  timeDraws(n = 60) {
    const gl = this.gl;
    const px = new Uint8Array(4);
    this.draw();
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      this.draw();
      gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
    }
    return (performance.now() - t0) / n;
  }

  // ------------------------------------------------------------------------------------- fallback
  setFallbackFrames(urls) {
    this.fallbackUrls = urls || [];
    this._updateFallback();
  }

  _updateFallback() {
    if (!this.noWebGL2) return;
    const urls = this.fallbackUrls || [];
    clearInterval(this._fbTimer);
    this._fbTimer = 0;
    if (!urls.length) {
      this.img.style.display = "none";
      return;
    }
    this.img.style.display = "block";
    let i = 0;
    const show = () => { this.img.src = urls[i % urls.length]; i++; };
    show();
    if (this.visible && urls.length > 1) this._fbTimer = setInterval(show, 1000 / Math.min(this.fps, 12));
  }

  // --------------------------------------------------------------------------------------- cleanup
  dispose() {
    if (this.disposed) return;
    this.disposed = true;
    this.playing = false;
    if (this._raf) cancelAnimationFrame(this._raf);
    clearInterval(this._fbTimer);
    this._io?.disconnect();
    this._ro?.disconnect();
    document.removeEventListener("visibilitychange", this._onVis);
    this.worker?.terminate();
    this.worker = null;
    const gl = this.gl;
    if (gl) {
      this._freeSceneGL();
      if (this.quadIndex) gl.deleteBuffer(this.quadIndex);
      if (this.vao) gl.deleteVertexArray(this.vao);
      if (this.bgVao) gl.deleteVertexArray(this.bgVao);
      if (this.prog) gl.deleteProgram(this.prog);
      if (this.bgProg) gl.deleteProgram(this.bgProg);
      gl.getExtension("WEBGL_lose_context")?.loseContext();
    }
    this.scene = null;
    this.frameCache.clear();
    this.canvas.width = this.canvas.height = 1;
  }
}
