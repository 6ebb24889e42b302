"""Ray's cost and gain for view groups: wall time of one character's groups locally vs on 1 and 2 Ray actors.

On a CPU with the tiny checkpoints this measures the engine's overhead (Ray start, actor start-up with its model
load, per-group hand-out and transfer), not a speed-up: two actors on two cores share the same cores.  It also prints
the expected whole-character times on 1..N GPUs computed from a single-GPU group time (``--gpu-step-seconds``,
default the official 7.6 s per CFG step on an H200; those figures are expected, not measured).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_ray.py                 # tiny, 21 views, 5 groups
    .venv/bin/python benchmarks/bench_ray.py --actors 1,2 --steps 4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_job(root: str, views: int, frames: int, steps: int, group_size: int):
    import numpy as np
    import torch

    from charactershot_core.cameras import orbit_rig, view_groups
    from charactershot_core.models.tiny import make_tiny_set
    from charactershot_core.sampling.job import MultiViewJob
    from charactershot_core.sampling.worker import SamplerSpec

    ts = make_tiny_set(os.path.join(root, "models"), views=views, with_t5=False)
    rng = np.random.default_rng(0)
    h, w = ts.height, ts.width
    g = torch.Generator().manual_seed(0)
    job = MultiViewJob(torch.from_numpy(rng.integers(0, 255, (views, h, w, 3), dtype=np.uint8)),
                       torch.from_numpy(rng.integers(0, 255, (frames, h, w, 3), dtype=np.uint8)),
                       torch.from_numpy(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)),
                       torch.randn(1, 16, 32, generator=g), torch.randn(1, 16, 32, generator=g), seed=42, steps=steps,
                       groups=view_groups(views, group_size), rig=orbit_rig(views).resized(w, h))
    return job, SamplerSpec(ts.official, ts.official, device="cpu")


def expected_gpu_table(step_s: float, steps: int, groups: int, gpus_max: int, load_s: float, vae_s: float,
                       characters: int) -> list:
    group_s = step_s * steps + vae_s
    rows = []
    for n in range(1, gpus_max + 1):
        rounds = math.ceil(groups / n)
        one = rounds * group_s + load_s
        many = math.ceil(characters * groups / n) * group_s + load_s
        rows.append({"gpus": n, "character_s": round(one, 1), "speedup": round((groups * group_s + load_s) / one, 2),
                     f"{characters}_characters_s": round(many, 1)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", type=int, default=21)
    ap.add_argument("--group-size", type=int, default=5)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--actors", default="1,2", help="actor counts to time")
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    ap.add_argument("--gpu-step-seconds", type=float, default=7.6, help="one CFG step of one 5-view group on one GPU "
                                                                        "(official code on an H200: 7.6 s)")
    ap.add_argument("--gpu-steps", type=int, default=50)
    ap.add_argument("--gpu-load-seconds", type=float, default=60.0, help="an actor's model load (expected)")
    ap.add_argument("--gpu-vae-seconds", type=float, default=20.0, help="VAE encode + decode of one group (expected)")
    ap.add_argument("--gpus-max", type=int, default=8)
    ap.add_argument("--characters", type=int, default=10, help="characters for the cast column of the GPU table")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from charactershot_core.distributed import raylib
    from charactershot_core.distributed.executor import RayExecutor
    from charactershot_core.sampling.executor import LocalExecutor, sample_multiview

    out = {"machine": f"{os.cpu_count()} CPU cores", "torch": torch.__version__, "views": args.views,
           "group_size": args.group_size, "frames": args.frames, "steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        job, spec = make_job(tmp, args.views, args.frames, args.steps, args.group_size)
        ng = len(job.groups)
        out["groups"] = ng
        torch.set_num_threads(1)
        t = time.perf_counter()
        worker = spec.build()
        out["local_build_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        ref = sample_multiview(job, LocalExecutor(worker), None)
        out["local_1thread_s"] = round(time.perf_counter() - t, 2)
        torch.set_num_threads(args.num_cpus)
        t = time.perf_counter()
        sample_multiview(job, LocalExecutor(worker), None)
        out[f"local_{args.num_cpus}threads_s"] = round(time.perf_counter() - t, 2)
        print(json.dumps(out), flush=True)

        t = time.perf_counter()
        ray = raylib.connect("", num_cpus=args.num_cpus)
        out["ray_init_s"] = round(time.perf_counter() - t, 2)
        for n in [int(x) for x in args.actors.split(",")]:
            t = time.perf_counter()
            ex = RayExecutor(spec, actors=n)
            start = time.perf_counter() - t
            t = time.perf_counter()
            res = sample_multiview(job, ex, None)
            wall = time.perf_counter() - t
            ex.close()
            same = bool(torch.equal(res.frames, ref.frames))
            out[f"ray_{n}_actors"] = {"actor_start_s": round(start, 2), "groups_s": round(wall, 2),
                                      "per_group_s": round(wall / ng, 2), "identical_to_local": same}
            print(json.dumps({f"ray_{n}_actors": out[f"ray_{n}_actors"]}), flush=True)
        ray.shutdown()
    one = out.get("ray_1_actors")
    if one:
        out["overhead_per_group_s"] = round((one["groups_s"] - out["local_1thread_s"]) / ng, 2)
    out["expected_gpu"] = {"assumed": {"step_s": args.gpu_step_seconds, "steps": args.gpu_steps,
                                       "groups": 5, "actor_load_s": args.gpu_load_seconds,
                                       "vae_s_per_group": args.gpu_vae_seconds},
                           "rows": expected_gpu_table(args.gpu_step_seconds, args.gpu_steps, 5, args.gpus_max,
                                                      args.gpu_load_seconds, args.gpu_vae_seconds, args.characters)}
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
