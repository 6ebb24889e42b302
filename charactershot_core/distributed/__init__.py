"""Past one GPU: view groups and whole characters on Ray (optional: ``pip install 'charactershot[ray]'``).

Nothing here imports Ray until it is asked for; the pack works without it.

* :mod:`.raylib`: finding Ray, connecting (``RAY_ADDRESS`` / an address / a local Ray), clear failures;
* :mod:`.executor`: :class:`RayExecutor`, long-lived actors taking view groups (an executor for
  :func:`charactershot_core.sampling.executor.sample_multiview`);
* :mod:`.jobs`: the ``batch`` jobs file (characters with views, poses, seeds, output folders);
* :mod:`.batch`: whole characters (groups -> assembly -> 4D fit task -> export) over an executor;
* :mod:`.submit`: :func:`submit_to_ray`, the Ray driver in a child process (safe to call from a server);
* :mod:`.serverconfig`: where a server (ComfyUI) may send groups, from its owner's configuration, never a workflow;
* :mod:`.cli`: ``python -m charactershot_core batch JOBS.json``.
"""
