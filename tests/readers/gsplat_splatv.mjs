// Reads a .splatv with gsplat.js (npm "gsplat", installed by scripts/setup.sh into .cache/node) and prints what it
// loaded as JSON. gsplat.js parses the container (magic, JSON chunk list, texture) and keeps the texture words; the
// per-Gaussian fields are decoded here from splaTV's shader layout (16 words per Gaussian), independently of the
// pack's Python reader. Usage: node gsplat_splatv.mjs <gsplat index.es.js> <file.splatv>
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [, , libPath, file] = process.argv;
const SPLAT = await import(pathToFileURL(libPath).href);
const bytes = readFileSync(file);
const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
const scene = new SPLAT.Scene();
const camera = new SPLAT.Camera();
const splatv = SPLAT.SplatvLoader._ParseSplatvBuffer(buffer, scene, camera);
const data = splatv.data;
const words = data.data;
const floats = new Float32Array(words.buffer, words.byteOffset, words.length);

function half(h) { // IEEE 754 binary16 -> number
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}
const lo = (w) => half(w & 0xffff), hi = (w) => half(w >>> 16);

const gaussians = [];
for (let i = 0; i < data.vertexCount; i++) {
  const w = (k) => words[16 * i + k];
  gaussians.push({
    position: [floats[16 * i], floats[16 * i + 1], floats[16 * i + 2]],
    rotation: [lo(w(3)), hi(w(3)), lo(w(4)), hi(w(4))],
    scale: [lo(w(5)), hi(w(5)), lo(w(6))],
    rgba: [w(7) & 0xff, (w(7) >>> 8) & 0xff, (w(7) >>> 16) & 0xff, w(7) >>> 24],
    motion: [lo(w(8)), hi(w(8)), lo(w(9)), hi(w(9)), lo(w(10)), hi(w(10)), lo(w(11)), hi(w(11)), lo(w(12))],
    omega: [lo(w(13)), hi(w(13)), lo(w(14)), hi(w(14))],
    padding: [hi(w(6)), hi(w(12))], // unused halves, zero in a well-formed file
    trbf: [lo(w(15)), hi(w(15))],
  });
}
process.stdout.write(JSON.stringify({
  loader: splatv.constructor.name, objects: scene.objects.length, vertexCount: data.vertexCount,
  width: data.width, height: data.height, camera: [camera.position.x, camera.position.y, camera.position.z],
  gaussians,
}));
