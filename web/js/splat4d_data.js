// CharacterShot 4D preview: readers for the .cs4d bundle (docs/4d_bundle_format.md) and the INRIA 3DGS .ply.
// Plain ES module, no dependencies; written for the pack. Every failure is a ViewerError with a message meant for
// the person looking at the node.
//
// Both readers return the same in-memory scene: per-splat colour + opacity (RGBA8) and, per frame, 16-bit quantised
// positions, rotations (wxyz) and log-scales (value = min + q * step). Keeping the quantised values (6 + 8 bytes per
// splat and frame) instead of floats halves the memory of long sequences; the sort worker works on them directly.

export const BUNDLE_VERSION = 1;
export const DEFAULT_MAX_SPLATS = 600000; // more than this is decimated (every k-th splat) so the tab stays live

export class ViewerError extends Error {
  constructor(message, kind = "error") {
    super(message);
    this.name = "ViewerError";
    this.kind = kind; // "missing" | "truncated" | "corrupt" | "version" | "format" | "error"
  }
}

const SH_C0 = 0.28209479177387814;

function decimation(total, maxSplats) {
  const stride = Math.max(1, Math.ceil(total / Math.max(1, maxSplats)));
  return { stride, count: Math.ceil(total / stride) };
}

async function* gunzipChunks(bytes, what) {
  let reader;
  try {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    reader = stream.getReader();
  } catch (e) {
    throw new ViewerError(`The 4D bundle is corrupt: cannot decompress block '${what}' (${e.message}).`, "corrupt");
  }
  while (true) {
    let r;
    try {
      r = await reader.read();
    } catch (e) {
      throw new ViewerError(`The 4D bundle is corrupt: block '${what}' does not decompress (${e.message || e}).`,
        "corrupt");
    }
    if (r.done) return;
    yield r.value;
  }
}

async function gunzipAll(bytes, expected, what) {
  const out = new Uint8Array(expected);
  let n = 0;
  for await (const chunk of gunzipChunks(bytes, what)) {
    if (n + chunk.length > expected) {
      throw new ViewerError(`The 4D bundle is corrupt: block '${what}' is larger than its header says (${expected} bytes).`, "corrupt");
    }
    out.set(chunk, n);
    n += chunk.length;
  }
  if (n !== expected) {
    throw new ViewerError(`The 4D bundle is corrupt: block '${what}' has ${n} bytes, its header says ${expected}.`, "corrupt");
  }
  return out;
}

// u16-delta-planes, decoded frame by frame while the gzip stream arrives (only one frame's chunk is buffered);
// keeps every `stride`-th splat. Returns {q: Uint16Array(T*n*C), min, step, frames, constant}.
async function decodePlanes(bytes, b, stride, n) {
  const [T, N, C] = b.shape;
  const NC = N * C;
  const levels = b.levels ?? 65535;
  if (b.raw_length !== T * 2 * NC) {
    throw new ViewerError(`The 4D bundle is corrupt: block '${b.name}' should hold ${T * 2 * NC} bytes, its header says ${b.raw_length}.`, "corrupt");
  }
  const q = new Uint16Array(NC);
  const out = new Uint16Array(T * n * C);
  const chunk = new Uint8Array(2 * NC);
  let fill = 0, t = 0, constant = true;
  const emit = () => {
    for (let k = 0; k < NC; k++) {
      const d = chunk[k] | (chunk[NC + k] << 8);
      if (t > 0 && d !== 0) constant = false;
      q[k] = (q[k] + d) & 0xffff;
    }
    const base = t * n * C;
    for (let j = 0, i = 0; j < n; j++, i += stride) {
      for (let c = 0; c < C; c++) out[base + j * C + c] = q[i * C + c];
    }
    t++;
    fill = 0;
  };
  for await (const part of gunzipChunks(bytes, b.name)) {
    let off = 0;
    while (off < part.length) {
      if (t >= T) throw new ViewerError(`The 4D bundle is corrupt: block '${b.name}' is too long.`, "corrupt");
      const take = Math.min(part.length - off, chunk.length - fill);
      chunk.set(part.subarray(off, off + take), fill);
      fill += take;
      off += take;
      if (fill === chunk.length) emit();
    }
  }
  if (t !== T || fill !== 0) {
    throw new ViewerError(`The 4D bundle is corrupt: block '${b.name}' ends after ${t} of ${T} frames.`, "corrupt");
  }
  const min = Array.from(b.min, Number);
  const step = Array.from(b.max, (hi, c) => (Number(hi) > min[c] ? (Number(hi) - min[c]) / levels : 0));
  return { q: out, min, step, frames: T, constant, levels };
}

export function sniff(buffer) {
  const u8 = new Uint8Array(buffer, 0, Math.min(4, buffer.byteLength));
  const s = String.fromCharCode(...u8);
  if (s === "CS4D") return "bundle";
  if (s.startsWith("ply")) return "ply";
  return "unknown";
}

export async function parseBundle(buffer, { maxSplats = DEFAULT_MAX_SPLATS } = {}) {
  const size = buffer.byteLength;
  if (size === 0) throw new ViewerError("The 4D bundle is empty (0 bytes).", "truncated");
  if (size < 12) throw new ViewerError(`The 4D bundle is truncated: ${size} bytes, less than its 12-byte start.`, "truncated");
  const view = new DataView(buffer);
  if (sniff(buffer) !== "bundle") {
    throw new ViewerError("Not a CharacterShot 4D bundle (the file does not start with 'CS4D').", "format");
  }
  const version = view.getUint32(4, true);
  if (version > BUNDLE_VERSION) {
    throw new ViewerError(`This bundle was written by a newer CharacterShot (format version ${version}); this viewer ` +
      `reads version ${BUNDLE_VERSION}. Update the CharacterShot pack to view it.`, "version");
  }
  if (version < 1) throw new ViewerError(`The 4D bundle is corrupt: format version ${version}.`, "corrupt");
  const L = view.getUint32(8, true);
  if (12 + L > size) {
    throw new ViewerError(`The 4D bundle is truncated: its header needs ${12 + L} bytes, the file has ${size}.`, "truncated");
  }
  let header;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array(buffer, 12, L)));
  } catch (e) {
    throw new ViewerError("The 4D bundle is corrupt: its header is not valid JSON.", "corrupt");
  }
  if (!header || header.format !== "charactershot-4d-bundle" || !Array.isArray(header.blocks)) {
    throw new ViewerError("The 4D bundle is corrupt: its header is not a charactershot-4d-bundle header.", "corrupt");
  }
  const N = header.count | 0, T = header.frames | 0;
  if (N < 1 || T < 1) throw new ViewerError(`The 4D bundle is corrupt: ${N} splats, ${T} frames.`, "corrupt");
  const base = 12 + L;
  const blocks = {};
  for (const b of header.blocks) blocks[b.name] = b;
  for (const name of ["rgba", "positions", "rotations", "log_scales"]) {
    const b = blocks[name];
    if (!b) throw new ViewerError(`The 4D bundle is corrupt: block '${name}' is missing.`, "corrupt");
    if (base + b.offset + b.length > size) {
      throw new ViewerError(`The 4D bundle is truncated: block '${name}' ends at byte ${base + b.offset + b.length}, ` +
        `the file has ${size} bytes. Save it again (the file was probably cut off while copying).`, "truncated");
    }
  }
  const bytesOf = (b) => new Uint8Array(buffer, base + b.offset, b.length);
  const { stride, count } = decimation(N, maxSplats);
  const rgbaAll = await gunzipAll(bytesOf(blocks.rgba), blocks.rgba.raw_length, "rgba");
  if (rgbaAll.length !== 4 * N) throw new ViewerError("The 4D bundle is corrupt: block 'rgba' has the wrong size.", "corrupt");
  const rgba = new Uint8Array(4 * count);
  for (let j = 0, i = 0; j < count; j++, i += stride) rgba.set(rgbaAll.subarray(4 * i, 4 * i + 4), 4 * j);
  const pos = await decodePlanes(bytesOf(blocks.positions), blocks.positions, stride, count);
  const rot = await decodePlanes(bytesOf(blocks.rotations), blocks.rotations, stride, count);
  const lsc = await decodePlanes(bytesOf(blocks.log_scales), blocks.log_scales, stride, count);
  for (const [name, blk, c] of [["positions", pos, 3], ["rotations", rot, 4], ["log_scales", lsc, 3]]) {
    const b = blocks[name];
    if (b.shape[1] !== N || b.shape[2] !== c || (name !== "log_scales" && b.shape[0] !== T) ||
        (name === "log_scales" && b.shape[0] !== 1 && b.shape[0] !== T)) {
      throw new ViewerError(`The 4D bundle is corrupt: block '${name}' has shape ${JSON.stringify(b.shape)}.`, "corrupt");
    }
  }
  const boxMin = pos.min.slice();
  const boxMax = blocks.positions.max.map(Number);
  return {
    kind: "bundle", count, total: N, stride, frames: T,
    times: Array.isArray(header.times) ? header.times.map(Number) : [...Array(T).keys()].map((i) => i / Math.max(1, T - 1)),
    meta: header.meta || {}, rgba, pos, rot, lsc,
    dynamicShape: !(rot.constant && (lsc.frames === 1 || lsc.constant)),
    bounds: { min: boxMin, max: boxMax },
  };
}

const PLY_TYPES = {
  char: ["getInt8", 1], int8: ["getInt8", 1], uchar: ["getUint8", 1], uint8: ["getUint8", 1],
  short: ["getInt16", 2], int16: ["getInt16", 2], ushort: ["getUint16", 2], uint16: ["getUint16", 2],
  int: ["getInt32", 4], int32: ["getInt32", 4], uint: ["getUint32", 4], uint32: ["getUint32", 4],
  float: ["getFloat32", 4], float32: ["getFloat32", 4], double: ["getFloat64", 8], float64: ["getFloat64", 8],
};
const GAUSSIAN_PROPS = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
  "rot_0", "rot_1", "rot_2", "rot_3"];

function quantise(values, n, C) {
  // values: Float32Array(n*C) -> {q, min, step, frames: 1, constant: true}
  const min = new Array(C).fill(Infinity), max = new Array(C).fill(-Infinity);
  for (let i = 0; i < n; i++) for (let c = 0; c < C; c++) {
    const v = values[i * C + c];
    if (v < min[c]) min[c] = v;
    if (v > max[c]) max[c] = v;
  }
  const step = min.map((lo, c) => (max[c] > lo ? (max[c] - lo) / 65535 : 0));
  const q = new Uint16Array(n * C);
  for (let i = 0; i < n; i++) for (let c = 0; c < C; c++) {
    q[i * C + c] = step[c] > 0 ? Math.round((values[i * C + c] - min[c]) / step[c]) : 0;
  }
  return { q, min, max, step, frames: 1, constant: true, levels: 65535 };
}

export function parsePly(buffer, { maxSplats = DEFAULT_MAX_SPLATS } = {}) {
  const size = buffer.byteLength;
  if (size === 0) throw new ViewerError("The .ply file is empty (0 bytes).", "truncated");
  const head = new Uint8Array(buffer, 0, Math.min(size, 1 << 16));
  const text = new TextDecoder("latin1").decode(head);
  if (!text.startsWith("ply")) throw new ViewerError("Not a PLY file (it does not start with 'ply').", "format");
  const endTag = text.indexOf("end_header");
  if (endTag < 0) throw new ViewerError("The .ply file is truncated or corrupt: no 'end_header' line.", "truncated");
  const nl = text.indexOf("\n", endTag);
  const bodyStart = nl + 1;
  let format = null;
  const elements = [];
  for (const raw of text.slice(0, endTag).split(/\r?\n/)) {
    const parts = raw.trim().split(/\s+/);
    if (parts[0] === "format") format = parts[1];
    else if (parts[0] === "element") elements.push({ name: parts[1], count: parseInt(parts[2], 10), props: [], size: 0, list: false });
    else if (parts[0] === "property" && elements.length) {
      const el = elements[elements.length - 1];
      if (parts[1] === "list") { el.list = true; continue; }
      const t = PLY_TYPES[parts[1]];
      if (!t) throw new ViewerError(`The .ply file has a property of unknown type '${parts[1]}'.`, "format");
      el.props.push({ name: parts[2], get: t[0], offset: el.size });
      el.size += t[1];
    }
  }
  if (format !== "binary_little_endian") {
    throw new ViewerError(`This .ply is '${format}'; the viewer reads binary_little_endian Gaussian .ply files.`, "format");
  }
  let offset = bodyStart, vertex = null;
  for (const el of elements) {
    if (el.name === "vertex") { vertex = el; break; }
    if (el.list) throw new ViewerError(`The .ply has a list element '${el.name}' before its vertices; it is not a Gaussian .ply.`, "format");
    offset += el.size * el.count;
  }
  if (!vertex) throw new ViewerError("The .ply has no 'vertex' element.", "format");
  const names = new Set(vertex.props.map((p) => p.name));
  const missing = GAUSSIAN_PROPS.filter((p) => !names.has(p));
  if (missing.length) {
    throw new ViewerError(`This .ply has no 3D Gaussian properties (missing ${missing.join(", ")}): it is a mesh or ` +
      "point cloud, not Gaussian splats.", "format");
  }
  if (vertex.list) throw new ViewerError("The .ply's vertex element has list properties; not a Gaussian .ply.", "format");
  const N = vertex.count;
  if (!(N > 0)) throw new ViewerError("The .ply has no Gaussians (0 vertices).", "format");
  if (offset + vertex.size * N > size) {
    throw new ViewerError(`The .ply file is truncated: ${N} Gaussians need ${offset + vertex.size * N} bytes, the file has ${size}.`, "truncated");
  }
  const { stride, count } = decimation(N, maxSplats);
  const dv = new DataView(buffer);
  const prop = Object.fromEntries(vertex.props.map((p) => [p.name, p]));
  const read = (i, name) => dv[prop[name].get](offset + i * vertex.size + prop[name].offset, true);
  const P = new Float32Array(count * 3), R = new Float32Array(count * 4), S = new Float32Array(count * 3);
  const rgba = new Uint8Array(count * 4);
  const clamp255 = (v) => Math.max(0, Math.min(255, Math.round(v * 255)));
  for (let j = 0, i = 0; j < count; j++, i += stride) {
    P[3 * j] = read(i, "x"); P[3 * j + 1] = read(i, "y"); P[3 * j + 2] = read(i, "z");
    let w = read(i, "rot_0"), x = read(i, "rot_1"), y = read(i, "rot_2"), z = read(i, "rot_3");
    const len = Math.hypot(w, x, y, z) || 1;
    const sgn = w < 0 ? -1 : 1;
    R[4 * j] = (sgn * w) / len; R[4 * j + 1] = (sgn * x) / len; R[4 * j + 2] = (sgn * y) / len; R[4 * j + 3] = (sgn * z) / len;
    for (let c = 0; c < 3; c++) S[3 * j + c] = read(i, `scale_${c}`);
    for (let c = 0; c < 3; c++) rgba[4 * j + c] = clamp255(0.5 + SH_C0 * read(i, `f_dc_${c}`));
    rgba[4 * j + 3] = clamp255(1 / (1 + Math.exp(-read(i, "opacity"))));
  }
  for (const arr of [P, R, S]) {
    for (let k = 0; k < arr.length; k++) {
      if (!Number.isFinite(arr[k])) throw new ViewerError("The .ply holds NaN or infinite values.", "corrupt");
    }
  }
  const pos = quantise(P, count, 3);
  return {
    kind: "ply", count, total: N, stride, frames: 1, times: [0], meta: {}, rgba, pos,
    rot: quantise(R, count, 4), lsc: quantise(S, count, 3), dynamicShape: false,
    bounds: { min: pos.min, max: pos.max },
  };
}

export async function parseScene(buffer, name = "", options = {}) {
  const kind = sniff(buffer);
  if (kind === "ply" || (kind === "unknown" && /\.ply$/i.test(name))) return parsePly(buffer, options);
  return parseBundle(buffer, options);
}

// ---------------------------------------------------------------------------------------- per-frame packing
const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
export function toHalf(v) {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  let e = ((x >>> 23) & 0xff) - 112;
  let m = x & 0x7fffff;
  if (e <= 0) {
    if (e < -10) return sign;
    m = (m | 0x800000) >>> (1 - e);
    return sign | ((m + 0x1000) >>> 13);
  }
  if (e >= 31) return sign | 0x7c00;
  const h = sign | (e << 10) | (m >>> 13);
  return h + ((m >>> 12) & 1); // round half up on the dropped bit
}

// Covariance (6 halves packed in 3 uint32) of splat j at frame t, written into out[o..o+2].
export function packCovariance(scene, t, j, out, o) {
  const { rot, lsc } = scene;
  const tr = rot.frames === 1 ? 0 : t, ts = lsc.frames === 1 ? 0 : t;
  const n = scene.count;
  const rb = (tr * n + j) * 4, sb = (ts * n + j) * 3;
  let w = rot.min[0] + rot.q[rb] * rot.step[0], x = rot.min[1] + rot.q[rb + 1] * rot.step[1];
  let y = rot.min[2] + rot.q[rb + 2] * rot.step[2], z = rot.min[3] + rot.q[rb + 3] * rot.step[3];
  const len = Math.hypot(w, x, y, z) || 1;
  w /= len; x /= len; y /= len; z /= len;
  const sx = Math.exp(lsc.min[0] + lsc.q[sb] * lsc.step[0]);
  const sy = Math.exp(lsc.min[1] + lsc.q[sb + 1] * lsc.step[1]);
  const sz = Math.exp(lsc.min[2] + lsc.q[sb + 2] * lsc.step[2]);
  // M = R S; covariance = M M^T
  const r00 = 1 - 2 * (y * y + z * z), r01 = 2 * (x * y - w * z), r02 = 2 * (x * z + w * y);
  const r10 = 2 * (x * y + w * z), r11 = 1 - 2 * (x * x + z * z), r12 = 2 * (y * z - w * x);
  const r20 = 2 * (x * z - w * y), r21 = 2 * (y * z + w * x), r22 = 1 - 2 * (x * x + y * y);
  const m00 = r00 * sx, m01 = r01 * sy, m02 = r02 * sz;
  const m10 = r10 * sx, m11 = r11 * sy, m12 = r12 * sz;
  const m20 = r20 * sx, m21 = r21 * sy, m22 = r22 * sz;
  const c00 = m00 * m00 + m01 * m01 + m02 * m02, c01 = m00 * m10 + m01 * m11 + m02 * m12;
  const c02 = m00 * m20 + m01 * m21 + m02 * m22, c11 = m10 * m10 + m11 * m11 + m12 * m12;
  const c12 = m10 * m20 + m11 * m21 + m12 * m22, c22 = m20 * m20 + m21 * m21 + m22 * m22;
  out[o] = toHalf(c00) | (toHalf(c01) << 16);
  out[o + 1] = toHalf(c02) | (toHalf(c11) << 16);
  out[o + 2] = toHalf(c12) | (toHalf(c22) << 16);
}

// Canonical texture data: 2 texels (32 bytes) per splat: [x, y, z, rgba8] [cov halves x3, 0] (frame 0).
export function packCanonical(scene, width = 2048) {
  const n = scene.count;
  const texels = 2 * n;
  const rows = Math.max(1, Math.ceil(texels / width));
  const data = new Uint32Array(width * rows * 4);
  const f = new Float32Array(data.buffer);
  const { pos, rgba } = scene;
  const rgba32 = new Uint32Array(rgba.buffer, rgba.byteOffset, n);
  for (let j = 0; j < n; j++) {
    const o = 8 * j;
    f[o] = pos.min[0] + pos.q[3 * j] * pos.step[0];
    f[o + 1] = pos.min[1] + pos.q[3 * j + 1] * pos.step[1];
    f[o + 2] = pos.min[2] + pos.q[3 * j + 2] * pos.step[2];
    data[o + 3] = rgba32[j];
    packCovariance(scene, 0, j, data, o + 4);
  }
  return { data, width, rows };
}

// Per-frame texture data: 1 texel per splat (positions) or 2 (positions + covariance) when shapes change.
export function packFrame(scene, t, out, texelsPerSplat) {
  const n = scene.count, { pos } = scene;
  const f = new Float32Array(out.buffer, out.byteOffset, out.length);
  const pb = t * n * 3, step = 4 * texelsPerSplat;
  for (let j = 0; j < n; j++) {
    const o = step * j, q = pb + 3 * j;
    f[o] = pos.min[0] + pos.q[q] * pos.step[0];
    f[o + 1] = pos.min[1] + pos.q[q + 1] * pos.step[1];
    f[o + 2] = pos.min[2] + pos.q[q + 2] * pos.step[2];
    if (texelsPerSplat === 2) packCovariance(scene, t, j, out, o + 4);
  }
  return out;
}
