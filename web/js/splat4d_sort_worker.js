// CharacterShot 4D preview: depth sort of the splats, run in a module Web Worker.
// ComfyUI imports every .js of a pack on the page, so this file only starts listening when it runs as a worker.
//
// An O(n) single-pass 16-bit counting sort: depth keys from the view's z row and the frame's 16-bit positions, a
// min/max pass, 65536 buckets, a prefix sum, a scatter. Every buffer is allocated once; the order arrays travel
// to the page and back as transferables (two of them, so one can be drawn while the other is filled).

export class DepthSorter {
  constructor(count, frames, qpos, min, step) {
    this.count = count;
    this.frames = frames;
    this.qpos = qpos; // Uint16Array(frames * count * 3)
    this.min = min;
    this.step = step;
    this.keys = new Float32Array(count);
    this.buckets = new Uint16Array(count);
    this.counts = new Uint32Array(65536);
    this.spare = [];
  }

  // view: 16 floats, column-major world->camera (OpenGL: the camera looks down -z). Sorts near to far.
  sort(frame, view, order) {
    const n = this.count, q = this.qpos, keys = this.keys, buckets = this.buckets, counts = this.counts;
    // depth = -(view z row . p) = const - sum_c q_c * (row_c * step_c): sort on the variable part
    const a0 = -view[2] * this.step[0], a1 = -view[6] * this.step[1], a2 = -view[10] * this.step[2];
    const base = Math.min(frame, this.frames - 1) * n * 3;
    let lo = Infinity, hi = -Infinity;
    for (let i = 0, k = base; i < n; i++, k += 3) {
      const d = q[k] * a0 + q[k + 1] * a1 + q[k + 2] * a2;
      keys[i] = d;
      if (d < lo) lo = d;
      if (d > hi) hi = d;
    }
    const scale = hi > lo ? 65535 / (hi - lo) : 0;
    counts.fill(0);
    for (let i = 0; i < n; i++) {
      const b = ((keys[i] - lo) * scale) | 0;
      buckets[i] = b;
      counts[b]++;
    }
    let sum = 0;
    for (let b = 0; b < 65536; b++) {
      const c = counts[b];
      counts[b] = sum;
      sum += c;
    }
    if (!order || order.length !== n) order = this.spare.pop() || new Uint32Array(n);
    for (let i = 0; i < n; i++) order[counts[buckets[i]]++] = i;
    return order;
  }
}

function startWorker() {
  let sorter = null;
  const spare = [];
  self.onmessage = (ev) => {
    const msg = ev.data;
    if (msg.type === "init") {
      sorter = new DepthSorter(msg.count, msg.frames, msg.qpos, msg.min, msg.step);
      spare.length = 0;
      self.postMessage({ type: "ready" });
    } else if (msg.type === "sort" && sorter) {
      if (msg.buffer && msg.buffer.length === sorter.count) spare.push(msg.buffer);
      const t0 = performance.now();
      const order = sorter.sort(msg.frame, msg.view, spare.pop());
      const ms = performance.now() - t0;
      self.postMessage({ type: "order", frame: msg.frame, viewId: msg.viewId, order, ms }, [order.buffer]);
    } else if (msg.type === "recycle" && sorter && msg.buffer && msg.buffer.length === sorter.count) {
      spare.push(msg.buffer);
    }
  };
}

if (typeof WorkerGlobalScope !== "undefined" && self instanceof WorkerGlobalScope) startWorker();
