"""``python -m charactershot_core batch JOBS.json``: many characters, locally or on Ray.

Without ``--ray`` the view groups run here, one after the other (no Ray needed).  With ``--ray`` they go to Ray
actors: a Ray started on this machine, or the cluster at ``--ray-address`` / ``RAY_ADDRESS``
(``ray start --head`` prints it; docs/distributed.md).  Progress goes to stderr, the summary (where each result
is) to stdout and, with ``--summary FILE``, to a JSON file.
"""

from __future__ import annotations

import json
import os
import sys


def cmd_batch(args) -> int:
    from .batch import format_summary, run_batch
    from .jobs import load_jobs

    jobs = load_jobs(args.jobs)
    use_ray = bool(args.ray or args.ray_address)
    if not use_ray and (args.gpus is not None or args.actors is not None):
        print("warning: --gpus / --actors need --ray; running locally", file=sys.stderr)
    if use_ray:
        from .raylib import LOCAL, check_reachable, require_ray, resolve_address

        require_ray()  # before reading any image or loading T5: "not installed" / "unreachable" come first
        address = resolve_address(args.ray_address)
        if address not in LOCAL:
            check_reachable(address, args.connect_timeout)
    try:
        outcomes = run_batch(jobs, use_ray=use_ray, address=args.ray_address, gpus=args.gpus, actors=args.actors,
                             cpus_per_actor=args.cpus_per_actor, threads=args.threads or None,
                             connect_timeout=args.connect_timeout, num_cpus=args.num_cpus, quiet=args.quiet,
                             retries=args.retries)
    except KeyboardInterrupt:
        print("interrupted: finished view groups are kept in each character's OUT/groups/ and reused by a rerun of "
              "the same command", file=sys.stderr)
        return 130
    print(format_summary(outcomes))
    if args.summary:
        tmp = f"{args.summary}.partial{os.getpid()}"
        os.makedirs(os.path.dirname(os.path.abspath(args.summary)), exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump([o.summary() for o in outcomes], f, indent=1)
        os.replace(tmp, args.summary)
    return 0 if all(o.error is None for o in outcomes) else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("batch", help="animate many characters (views -> multi-view videos -> 4D fit), "
                                            "locally or on a Ray cluster")
    p.add_argument("jobs", help="jobs file (JSON): model, characters with views, poses, reference pose, seed, out; "
                                "see docs/distributed.md")
    p.add_argument("--ray", action="store_true", help="run the view groups on Ray actors (a local Ray unless "
                                                      "--ray-address or RAY_ADDRESS says where the cluster is)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address HOST:PORT (implies --ray; default: "
                                                       "RAY_ADDRESS, else a Ray started here)")
    p.add_argument("--gpus", type=int, default=None, help="GPU actors (default: one per GPU of the cluster; 0: CPU "
                                                          "actors)")
    p.add_argument("--actors", type=int, default=None, help="number of actors (default: one per GPU, or per "
                                                            "--cpus-per-actor CPUs without GPUs)")
    p.add_argument("--cpus-per-actor", type=int, default=1, help="CPUs each actor reserves (and its torch threads)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a Ray started here (default: all)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: --cpus-per-actor with Ray, "
                                                          "torch's default locally)")
    p.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to wait for the cluster to answer")
    p.add_argument("--retries", type=int, default=2, help="restarts of a dead actor and retries of its group (Ray), "
                                                          "then as many hand-overs to another actor")
    p.add_argument("--summary", default=None, help="also write the summary as JSON to this file")
    p.add_argument("--quiet", action="store_true", help="no per-step progress")
    p.set_defaults(func=cmd_batch)
