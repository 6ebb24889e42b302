"""``python -m charactershot_core ARGS`` run in the test process (``main(argv)``, the function the module runs): the
same parser, commands and exit codes without starting an interpreter and importing torch again for each call. The
tests that start the real module as a process (test_package's ``info``, the ``groups`` and ``sample`` commands) keep
the entry point itself covered."""

from __future__ import annotations

import contextlib
import io
import subprocess

from tests.comfy_host import REPO


def run_main(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    """Exit code, stdout and stderr of ``main(list(args))`` run in ``cwd``, as ``subprocess.run`` gives them."""
    from charactershot_core.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as e:  # argparse's own errors (exit code 2) and --help
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return subprocess.CompletedProcess(["python", "-m", "charactershot_core", *args], rc, out.getvalue(),
                                       err.getvalue())
