"""Windows: names legal there, path confinement with Windows' path rules, the Windows branch that stops a Ray driver
child, and a scan of the shipped code for calls that exist on one system only.

Everything runs on any system: the path functions take ``ntpath`` (Windows' rules) as their path module, and the
Windows process branch runs with ``childproc.WINDOWS`` set and the Windows system calls replaced by recorders,
while every POSIX-only call is removed from ``os`` and ``signal`` (so a POSIX call in that branch fails the test).
"""

from __future__ import annotations

import ctypes
import ntpath
import os
import posixpath
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from charactershot_core import naming
from charactershot_core.distributed import childproc
from charactershot_core.errors import InputError
from tests.platform_scan import scan_paths, scan_source

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["nodes", "charactershot_core", "__init__.py"]


# ------------------------------------------------------------------------------------------------ names
@pytest.mark.parametrize("name", ["a:b", "a*b", "what?", 'say"hi"', "a<b", "a>b", "a|b", "tab\there", "nul\x00",
                                  "bell\x07", "esc\x1b", "dot.", "space ", "dots...", "CON", "con", "Con.txt",
                                  "nul.tar.gz", "NUL .png", "aux", "PRN", "COM1", "com9.log", "LPT1", "lpt9",
                                  "COM\u00b9", "LPT\u00b3.txt", "CONIN$", ".", "..", "", "x" * 256,
                                  "\u00e9" * 128])
def test_names_windows_refuses_are_refused(name):
    assert naming.name_problem(name) is not None
    with pytest.raises(InputError) as e:
        naming.check_name(name, "filename_prefix")
    assert e.value.input_name == "filename_prefix" and "legal on Windows" in e.value.detail


@pytest.mark.parametrize("name", ["alice", "Alice_01", "COM10", "CONSOLE", "console.log", "LPT0", "nullable",
                                  ".hidden", "a.b.c", "x" * 255, "\u00e9" * 127, "\u03b1\u03b2\u03b3 \u6f22\u5b57",
                                  "with space", "100%", "a#b", "[output]", "a;b", "emoji\U0001f600"])
def test_names_every_system_allows_are_allowed(name):
    assert naming.name_problem(name) is None
    assert naming.check_name(name, "x") == name


def test_the_length_limit_counts_what_the_pack_appends():
    assert naming.name_problem("x" * 200, reserve=40) is None
    why = naming.name_problem("x" * 230, reserve=40)
    assert "270 characters" in why and "40 characters the pack appends" in why
    # NTFS counts UTF-16 units (an emoji is 2), ext4 and APFS UTF-8 bytes (an emoji is 4): the stricter wins
    assert naming.name_problem("\U0001f600" * 63) is None
    assert naming.name_problem("\U0001f600" * 64) is not None


def test_safe_name_always_gives_a_legal_name():
    rng = random.Random(20)
    alphabet = ['<', '>', ':', '"', '/', '\\', '|', '?', '*', '.', ' ', '\x00', '\x1f', 'a', 'Z', '\u00e9',
                '\U0001f600', 'C', 'O', 'N', 'L', 'P', 'T', 'U', 'X', '1', '\u00b9']
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        reserve = rng.choice([0, 40])
        out = naming.safe_name(text, reserve=reserve)
        assert naming.name_problem(out, reserve) is None, (text, out)
    assert naming.safe_name("CON") == "CON_"
    assert naming.safe_name("nul.txt") == "nul_.txt"
    assert naming.safe_name("a:b?.") == "a_b_"
    assert naming.safe_name("  ") == "unnamed"
    assert naming.safe_name("alice") == "alice"


def test_the_error_suggests_a_legal_name():
    with pytest.raises(InputError, match=r"reserved device name.*for example 'AUX_'"):
        naming.check_name("AUX", "filename_prefix")


@pytest.mark.parametrize("text,expected", [("charactershot/alice", "charactershot/alice"),
                                           ("charactershot\\alice", "charactershot/alice"),
                                           ("a//b/./c", "a/b/c"), (" a/b ", "a/b")])
def test_relative_names_accept_both_separators(text, expected):
    assert naming.check_relative(text, "filename_prefix") == expected


@pytest.mark.parametrize("text", ["", "   ", "/abs", "\\abs", "C:\\x", "C:/x", "C:x", "c:", "\\\\server\\share\\x",
                                  "//server/share/x", "../x", "a/../../x", "a\\..\\x", "a/CON/b", "a/b.", "a /b",
                                  "a/b:c", "a/LPT1.txt/b", "a/\x01"])
def test_relative_names_refuse_what_would_leave_or_break(text):
    with pytest.raises(InputError) as e:
        naming.check_relative(text, "filename_prefix")
    assert e.value.input_name == "filename_prefix"


def test_the_reserve_applies_to_the_last_part_only():
    naming.check_relative("x" * 250 + "/b", "p", reserve=40)
    with pytest.raises(InputError, match="too long"):
        naming.check_relative("a/" + "x" * 250, "p", reserve=40)


def test_check_path_with_windows_rules():
    assert naming.check_path(r"C:\Users\me\out\alice", "out", pathmod=ntpath)
    assert naming.check_path(r"\\server\share\renders", "out", pathmod=ntpath)
    assert naming.check_path(r"..\out\.\alice", "out", pathmod=ntpath)
    for bad in (r"C:\out\al:ice", r"C:\out\aux\x", r"D:\out\trailing.", "out/CON.d", r"\\srv\share\a?b"):
        with pytest.raises(InputError, match="^out: "):
            naming.check_path(bad, "out", pathmod=ntpath)


def test_check_path_leaves_existing_folders_alone(tmp_path):
    odd = tmp_path / "exists:already"    # legal on Linux; not the pack's to judge since it is already there
    odd.mkdir()
    assert naming.check_path(str(odd / "new"), "out") == str(odd / "new")
    with pytest.raises(InputError, match="'new:one' contains ':'"):
        naming.check_path(str(odd / "new:one" / "x"), "out")


def test_the_counter_ignores_case_as_windows_and_macos_do(tmp_path):
    for n in ("Alice_00001.ply", "ALICE_00002_bundle.cs4d", "alicex_00009.ply", "bob_00004.ply"):
        (tmp_path / n).write_bytes(b"")
    assert naming.next_counter(str(tmp_path), "alice") == 3     # not 1: alice_00001.ply is Alice_00001.ply there
    assert naming.next_counter(str(tmp_path), "Bob") == 5
    assert naming.next_counter(str(tmp_path), "carol") == 1
    (tmp_path / "carol_100000.ply").write_bytes(b"")            # past five digits
    assert naming.next_counter(str(tmp_path), "carol") == 100001
    assert naming.next_counter(str(tmp_path / "missing"), "x") == 1


# ------------------------------------------------------------------------------------------------ confinement
ROOT = r"C:\ComfyUI\output"


@pytest.mark.parametrize("path", [r"C:\ComfyUI\output\a.png", r"c:\comfyui\OUTPUT\sub\a.png", "C:/ComfyUI/output/x",
                                  r"C:\ComfyUI\output", r"C:\ComfyUI\output\sub\..\a.png"])
def test_inside_with_windows_rules(path):
    assert naming.inside(ROOT, path, ntpath)


@pytest.mark.parametrize("path", [r"D:\ComfyUI\output\a.png", r"C:\ComfyUI\output2\a.png", r"C:\ComfyUI\input\a.png",
                                  r"C:\ComfyUI\output\..\secret.txt", r"\\server\share\ComfyUI\output\a.png",
                                  "relative\\a.png"])
def test_outside_with_windows_rules_is_false_never_an_exception(path):
    assert naming.inside(ROOT, path, ntpath) is False


def test_two_drives_made_commonpath_raise_and_inside_does_not():
    with pytest.raises(ValueError):
        ntpath.commonpath([ROOT, r"D:\x"])       # what the old confinement called
    assert naming.inside(ROOT, r"D:\x", ntpath) is False


def test_unc_shares():
    root = r"\\nas\comfy\output"
    assert naming.inside(root, r"\\NAS\Comfy\output\a\b.png", ntpath)
    assert not naming.inside(root, r"\\nas\other\output\a.png", ntpath)
    assert not naming.inside(root, r"C:\output\a.png", ntpath)


def test_inside_with_posix_rules_is_case_sensitive():
    assert naming.inside("/srv/ComfyUI/output", "/srv/ComfyUI/output/a", posixpath)
    assert not naming.inside("/srv/ComfyUI/output", "/srv/comfyui/output/a", posixpath)


@pytest.mark.parametrize("name", [r"D:\x.png", "D:x.png", r"C:\ComfyUI\input\a.png", r"\\srv\share\a.png",
                                  r"\rooted.png", "/rooted.png", r"..\a.png", "sub/../../a.png", ""])
def test_confined_refuses_with_the_named_error(name):
    with pytest.raises(InputError) as e:
        naming.confined(r"C:\ComfyUI\input", name, "image", "input", "an image", ntpath)
    assert e.value.input_name == "image" and "ComfyUI's input folder" in e.value.detail


def test_confined_joins_with_windows_separators():
    assert naming.confined(r"C:\ComfyUI\input", "sub/a.png", "image", pathmod=ntpath) == r"C:\ComfyUI\input\sub\a.png"
    assert naming.confined(r"C:\ComfyUI\input", "sub\\a.png", "image", pathmod=ntpath) == r"C:\ComfyUI\input\sub\a.png"


def test_confined_refuses_a_link_that_leaves(tmp_path):
    root = tmp_path / "input"
    root.mkdir()
    (tmp_path / "secret").mkdir()
    (root / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(InputError, match="points outside ComfyUI's input folder"):
        naming.confined(str(root), "link/a.png", "image")


def test_windows_path_length():
    folder = "C:\\" + "\\".join(["ComfyUI_windows_portable", "ComfyUI", "output", "charactershot"] * 3)
    assert naming.path_too_long(folder + "\\x", 80, ntpath, long_paths=False) is None
    why = naming.path_too_long(folder + "\\" + "y" * 100, 80, ntpath, long_paths=False)
    assert why is not None and "Windows allows 259" in why
    assert naming.path_too_long(folder + "\\" + "y" * 100, 80, ntpath, long_paths=True) is None
    assert naming.path_too_long("/" + "y" * 400, 80, posixpath) is None


# ------------------------------------------------------------------------------------------------ Windows process branch
POSIX_ONLY = {os: ["killpg", "setsid", "getpgid", "setpgrp", "getpgrp", "setpgid", "getsid", "fork", "forkpty",
                   "getuid", "geteuid", "getgid", "chown", "mkfifo", "nice", "wait3", "wait4"],
              signal: ["SIGKILL", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD", "SIGQUIT", "SIGSTOP",
                       "SIGCONT", "alarm", "setitimer", "pthread_kill", "pause"]}


class Kernel32:
    """Records the Windows calls; answers like kernel32 does."""

    WAIT_TIMEOUT = 258

    def __init__(self, console=True, assign_ok=True, open_error=0):
        self.calls = []
        self.console, self.assign_ok, self.open_error = console, assign_ok, open_error
        self.parent_ended = False
        self.limit_flags = None

    def __getattr__(self, name):
        raise AssertionError(f"unexpected kernel32 call {name}")

    def CreateJobObjectW(self, attrs, name):
        self.calls.append(("CreateJobObjectW",))
        return 4242

    def SetInformationJobObject(self, h, cls, info, size):
        obj = info._obj
        assert cls == 9 and size == ctypes.sizeof(obj)
        self.limit_flags = obj.BasicLimitInformation.LimitFlags
        self.calls.append(("SetInformationJobObject", h))
        return 1

    def AssignProcessToJobObject(self, job, process):
        self.calls.append(("AssignProcessToJobObject", job, process))
        return 1 if self.assign_ok else 0

    def TerminateJobObject(self, job, code):
        self.calls.append(("TerminateJobObject", job))
        return 1

    def CloseHandle(self, h):
        self.calls.append(("CloseHandle", h))
        return 1

    def GetConsoleWindow(self):
        return 77 if self.console else 0

    def OpenProcess(self, access, inherit, pid):
        self.calls.append(("OpenProcess", access, inherit, pid))
        return 0 if self.open_error else 999

    def WaitForSingleObject(self, h, ms):
        assert h == 999 and ms == 0
        return 0 if self.parent_ended else self.WAIT_TIMEOUT


class FakeProc:
    """A child that ends on CTRL_BREAK (``polite``) or only when its job or tree is ended."""

    def __init__(self, args, polite=True, break_error=None, **kw):
        self.args, self.kw = args, kw
        self.pid, self._handle = 31337, 5150
        self.polite, self.break_error = polite, break_error
        self.returncode = None
        self.signals = []

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None and self.kw.get("watch") and os.path.exists(self.kw["watch"]):
            self.returncode = 143        # the child's watcher saw the stop file
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig):
        self.signals.append(sig)
        if self.break_error:
            raise self.break_error
        if self.polite and sig == childproc.CTRL_BREAK_EVENT:
            self.returncode = 143


@pytest.fixture
def windows(monkeypatch):
    """The Windows branch of childproc, with POSIX-only calls gone and the Windows calls recorded."""
    for mod, names in POSIX_ONLY.items():
        for n in names:
            if hasattr(mod, n):
                monkeypatch.delattr(mod, n)

    def no_os_kill(*a):
        raise AssertionError("os.kill on Windows is TerminateProcess: it ends the process it was meant to probe")

    monkeypatch.setattr(os, "kill", no_os_kill)
    monkeypatch.setattr(childproc, "WINDOWS", True)
    k = Kernel32()
    monkeypatch.setattr(childproc, "_kernel32", lambda: k)
    env = type("Env", (), {})()
    env.k, env.procs, env.runs = k, [], []

    def popen(args, **kw):
        assert "start_new_session" not in kw and "preexec_fn" not in kw and "process_group" not in kw
        p = FakeProc(args, polite=env.polite, break_error=env.break_error, **kw)
        env.procs.append(p)
        return p

    def run(args, **kw):
        env.runs.append(args)
        for p in env.procs:
            p.returncode = 1
        return subprocess.CompletedProcess(args, 0)

    env.polite, env.break_error = True, None
    monkeypatch.setattr(childproc.subprocess, "Popen", popen)
    monkeypatch.setattr(childproc.subprocess, "run", run)
    return env


def test_the_fixture_removes_the_posix_calls(windows, monkeypatch):
    # the POSIX branch cannot run under the fixture: a POSIX call in the Windows branch would fail the same way
    monkeypatch.setattr(childproc, "WINDOWS", False)
    with pytest.raises(AttributeError):
        childproc.stop_tree(FakeProc(["x"]), None, 0, 0)
    with pytest.raises(AssertionError, match="TerminateProcess"):
        childproc.parent_watch(os.getppid())()


def test_windows_child_gets_its_own_process_group_and_a_kill_on_close_job(windows):
    tree = childproc.ChildTree(["python", "-m", "x"], stdin=subprocess.DEVNULL)
    p = windows.procs[0]
    assert p.kw["creationflags"] == childproc.CREATE_NEW_PROCESS_GROUP
    assert windows.k.limit_flags & childproc.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    assert ("AssignProcessToJobObject", 4242, p._handle) in windows.k.calls
    assert tree.job is not None
    tree.close()
    assert windows.k.calls[-1] == ("CloseHandle", 4242) and tree.job is None


def test_windows_server_without_console_starts_the_child_without_a_window(windows):
    windows.k.console = False
    childproc.ChildTree(["python"])
    assert windows.procs[0].kw["creationflags"] == childproc.CREATE_NEW_PROCESS_GROUP | childproc.CREATE_NO_WINDOW


def test_windows_stop_asks_with_ctrl_break_first(windows):
    tree = childproc.ChildTree(["python"])
    tree.stop(grace=0.01, kill_wait=0.01)
    p = windows.procs[0]
    assert p.signals == [childproc.CTRL_BREAK_EVENT] and p.returncode == 143
    assert not any(c[0] == "TerminateJobObject" for c in windows.k.calls) and windows.runs == []


def test_windows_stop_ends_the_job_when_the_child_does_not_listen(windows, monkeypatch):
    windows.polite = False
    tree = childproc.ChildTree(["python"])
    p = windows.procs[0]
    monkeypatch.setattr(windows.k, "TerminateJobObject",
                        lambda job, code: (windows.k.calls.append(("TerminateJobObject", job)),
                                           setattr(p, "returncode", 1))[-1] or 1, raising=False)
    tree.stop(grace=0.01, kill_wait=0.01)
    assert p.signals == [childproc.CTRL_BREAK_EVENT]
    assert ("TerminateJobObject", 4242) in windows.k.calls and windows.runs == [] and p.returncode == 1


@pytest.mark.parametrize("break_error", [None, OSError(6, "no console")])
def test_windows_stop_without_a_job_uses_taskkill_on_the_tree(windows, break_error):
    windows.polite, windows.break_error = False, break_error
    windows.k.assign_ok = False                # e.g. a nested job refused: the job is closed, taskkill remains
    tree = childproc.ChildTree(["python"])
    assert tree.job is None and ("CloseHandle", 4242) in windows.k.calls
    tree.stop(grace=0.01, kill_wait=0.01)
    assert windows.runs == [["taskkill", "/T", "/F", "/PID", "31337"]]
    assert windows.procs[0].returncode == 1


def test_windows_stop_without_a_console_asks_through_the_stop_file(windows, tmp_path):
    windows.polite, windows.break_error = False, OSError(6, "no console")
    stop = tmp_path / "stop"
    tree = childproc.ChildTree(["python"], stop_file=str(stop), watch=str(stop))
    tree.stop(grace=0.01, kill_wait=0.01)
    assert stop.exists() and windows.procs[0].returncode == 143
    assert not any(c[0] == "TerminateJobObject" for c in windows.k.calls) and windows.runs == []


def test_the_child_stops_when_the_stop_file_appears(tmp_path, monkeypatch):
    from charactershot_core.distributed import submit

    raised, exited = [], []
    monkeypatch.setattr(submit, "stop_self", lambda: raised.append(1))
    monkeypatch.setattr(os, "_exit", lambda code: exited.append(code))
    t = submit.exit_with_parent(os.getppid(), poll=0.01, grace=0.01, stop_file=str(tmp_path / "stop"))
    time.sleep(0.05)
    assert raised == [] and t.is_alive()
    (tmp_path / "stop").write_text("")
    t.join(5)
    assert raised == [1] and exited == [143]


def test_windows_stop_of_an_ended_child_does_nothing(windows):
    tree = childproc.ChildTree(["python"])
    windows.procs[0].returncode = 0
    tree.stop()
    assert windows.procs[0].signals == [] and windows.runs == []


def test_windows_parent_watch_waits_on_a_process_handle(windows):
    gone = childproc.parent_watch(4711)
    assert windows.k.calls[-1] == ("OpenProcess", childproc.SYNCHRONIZE, False, 4711)
    assert gone() is False
    windows.k.parent_ended = True
    assert gone() is True


@pytest.mark.parametrize("error,expected", [(87, True), (5, False)])
def test_windows_parent_watch_when_the_parent_cannot_be_opened(windows, monkeypatch, error, expected):
    windows.k.open_error = error
    monkeypatch.setattr(childproc, "_last_error", lambda: error)
    assert childproc.parent_watch(4711)() is expected   # 87: no such process (gone); 5: access denied (cannot tell)


def test_windows_exit_with_parent_stops_the_child_through_its_handler(windows, monkeypatch):
    from charactershot_core.distributed import submit

    raised, exited = [], []
    monkeypatch.setattr(signal, "raise_signal", lambda s: raised.append(s))
    monkeypatch.setattr(os, "_exit", lambda code: exited.append(code))
    t = submit.exit_with_parent(4711, poll=0.01, grace=0.01)
    time.sleep(0.05)
    assert raised == [] and t.is_alive()
    windows.k.parent_ended = True
    t.join(5)
    assert raised == [signal.SIGTERM] and exited == [143]


def test_windows_stop_signals_include_ctrl_break(windows, monkeypatch):
    monkeypatch.setattr(signal, "SIGBREAK", 21, raising=False)
    assert childproc.stop_signals() == [signal.SIGTERM, 21]


def test_every_kernel32_call_has_a_pointer_sized_prototype(monkeypatch):
    """Handles are pointers on 64-bit Windows: a function whose ``restype`` is left at ctypes' default ``int`` would
    cut them.  Every kernel32 function the Windows branch calls (those the recorder above answers) is declared."""
    from ctypes import wintypes

    class Fn:
        restype = argtypes = None

    class Dll:
        def __init__(self):
            self.fns = {}

        def __getattr__(self, name):
            return self.fns.setdefault(name, Fn())

    dll = Dll()
    monkeypatch.setattr(childproc, "WINDOWS", True)
    monkeypatch.setattr(ctypes, "WinDLL", lambda name, use_last_error=False: dll, raising=False)
    assert childproc._kernel32() is dll
    used = {n for n in vars(Kernel32) if n[0].isupper() and n != "WAIT_TIMEOUT"}
    assert used <= set(dll.fns), used - set(dll.fns)
    for name in used:
        assert dll.fns[name].restype is not None, name
    for name in ("CreateJobObjectW", "OpenProcess", "GetConsoleWindow"):
        assert ctypes.sizeof(dll.fns[name].restype) == ctypes.sizeof(ctypes.c_void_p)
    assert dll.fns["WaitForSingleObject"].argtypes[0] is wintypes.HANDLE


def test_job_structures_have_the_windows_x64_layout():
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        pytest.skip("64-bit layout")
    assert ctypes.sizeof(childproc.JOBOBJECT_BASIC_LIMIT_INFORMATION) == 64
    assert ctypes.sizeof(childproc.JOBOBJECT_EXTENDED_LIMIT_INFORMATION) == 144


# ------------------------------------------------------------------------------------------------ POSIX branch, for real
@pytest.mark.skipif(sys.platform == "win32", reason="the POSIX branch")
def test_posix_stop_ends_the_child_and_its_children(tmp_path):
    code = textwrap.dedent("""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)       # a child that does not listen
        g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(g.pid, flush=True)
        time.sleep(600)
    """)
    tree = childproc.ChildTree([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    grandchild = int(tree.proc.stdout.readline())
    t0 = time.time()
    tree.stop(grace=0.5, kill_wait=5)
    assert tree.proc.poll() is not None and time.time() - t0 < 5
    deadline = time.time() + 5
    while _alive(grandchild) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the grandchild outlived the stop"
    tree.proc.stdout.close()


def _alive(pid: int) -> bool:
    if not os.path.isdir("/proc"):       # macOS: the reparented grandchild is reaped by launchd
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------------------------------------ the code scan
def test_shipped_code_has_no_one_system_call_outside_a_platform_guard():
    found = scan_paths(REPO, SHIPPED)
    assert found == [], "\n".join(map(str, found))


UNGUARDED = {
    "import os\nos.killpg(1, 15)": "os.killpg",
    "import os\nos.kill(pid, 0)": "os.kill",
    "import os as o\no.setsid()": "os.setsid",
    "import signal\ns = signal.SIGKILL": "signal.SIGKILL",
    "from signal import SIGHUP": "signal.SIGHUP",
    "from os import getpgid": "os.getpgid",
    "import fcntl": "import fcntl",
    "import resource": "import resource",
    "import subprocess\nsubprocess.Popen(a, start_new_session=True)": "start_new_session=",
    "import subprocess\nsubprocess.run(a, preexec_fn=f)": "preexec_fn=",
    "import subprocess\nsubprocess.Popen(a, process_group=0)": "process_group=",
    "import multiprocessing as mp\nmp.get_context('fork')": "get_context('fork')",
    "import sys, os\nif sys.platform == 'win32':\n    os.killpg(1, 9)": "os.killpg",
    "import sys, os\nif sys.platform != 'win32':\n    pass\nelse:\n    os.killpg(1, 9)": "os.killpg",
    "import os\nif hasattr(os, 'setsid'):\n    os.killpg(1, 9)": "os.killpg",
    "import os\ndef f():\n    if os.name == 'posix':\n        pass\n    os.fork()": "os.fork",
    "import msvcrt": "import msvcrt",
    "import ctypes\nk = ctypes.WinDLL('kernel32')": "ctypes.WinDLL",
    "import signal\nsignal.signal(signal.SIGBREAK, h)": "signal.SIGBREAK",
    "import sys, signal\nif sys.platform == 'linux':\n    signal.CTRL_BREAK_EVENT": "signal.CTRL_BREAK_EVENT",
}


@pytest.mark.parametrize("source", list(UNGUARDED))
def test_scan_finds_unguarded_calls(source):
    found = scan_source(source)
    assert [f.api for f in found] == [UNGUARDED[source]], found


GUARDED = [
    "import sys, os\nif sys.platform != 'win32':\n    os.killpg(1, 9)",
    "import sys, os\nif sys.platform == 'win32':\n    pass\nelse:\n    os.setsid()",
    "import os\nif os.name == 'posix':\n    import fcntl",
    "import os\nif os.name != 'nt':\n    os.getuid()",
    "import sys, os\nif not sys.platform.startswith('win'):\n    os.fork()",
    "import sys, signal\nif sys.platform.startswith('linux') and x:\n    signal.SIGKILL",
    "import platform, os\nif platform.system() != 'Windows':\n    os.getpgid(0)",
    "import os\nn = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else 1",
    "import os\nok = hasattr(os, 'killpg') and os.killpg(1, 9)",
    "import sys, os\nWINDOWS = sys.platform == 'win32'\ndef f():\n    if WINDOWS:\n        return\n    os.killpg(1, 9)",
    "import sys, os\nWIN = sys.platform == 'win32'\nif not WIN:\n    os.kill(1, 0)",
    ("import sys, subprocess\nWIN = sys.platform == 'win32'\ndef f():\n    if WIN:\n        return {}\n    else:\n"
     "        return dict(start_new_session=True)"),
    "try:\n    import fcntl\nexcept ImportError:\n    fcntl = None",
    "import subprocess\nsubprocess.Popen(a, start_new_session=False, preexec_fn=None)",
    "import sys\ndef f():\n    if sys.platform != 'win32':\n        raise OSError\n    import winreg",
    "import sys, ctypes\nif sys.platform == 'win32':\n    k = ctypes.WinDLL('kernel32')",
    "import signal\nif hasattr(signal, 'SIGBREAK'):\n    signal.signal(signal.SIGBREAK, h)",
    "import os\nos.getppid()\nos.getpid()\nos.replace(a, b)",
]


@pytest.mark.parametrize("source", GUARDED)
def test_scan_accepts_guarded_calls(source):
    assert scan_source(source) == []


def test_the_scan_would_have_caught_the_old_ray_stop():
    old = textwrap.dedent("""
        import os, signal, subprocess
        def _stop(proc):
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                os.killpg(proc.pid, sig)
        def start(argv):
            return subprocess.Popen(argv, start_new_session=True)
    """)
    assert {f.api for f in scan_source(old)} == {"signal.SIGKILL", "os.killpg", "start_new_session="}


# ------------------------------------------------------------------------------------------------ where names are used
def test_the_command_line_refuses_an_out_folder_windows_cannot_create(tmp_path, capsys):
    from charactershot_core.__main__ import main

    for bad in ("renders:v2", "aux", "take1."):
        assert main(["cameras", "--official", "--out", str(tmp_path / bad / "rig.json")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: --out: expected a path whose names are legal on Windows"), err
    assert list(tmp_path.iterdir()) == []
    assert main(["cameras", "--official", "--out", str(tmp_path / "rig.json")]) == 0
    assert (tmp_path / "rig.json").is_file()


def test_a_jobs_file_out_folder_windows_cannot_create_names_the_line(tmp_path):
    from charactershot_core.distributed.jobs import load_jobs

    p = tmp_path / "jobs.json"
    p.write_text('{"model": "m", "defaults": {"views": "v", "poses": "p", "reference_pose": "r.png"},\n'
                 ' "characters": [{"out": "out/alice"},\n'
                 '                {"out": "out/bob?"}]}\n')
    with pytest.raises(InputError, match=r"line 3, characters\[1\]\.out: .*'bob\?' contains '\?'"):
        load_jobs(str(p))
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_save_nodes_refuse_prefixes_windows_cannot_write(comfy):
    """Through the real host: a prefix with a reserved name, a colon or a trailing dot is a named error on every
    system (a workflow saved here must run on Windows too), and nothing is written."""
    from tests.comfy_host import WorkflowError

    def prompt(prefix):
        return {"1": {"class_type": "CharacterShotCameraRig",
                      "inputs": {"preset": "official_21_views", "num_views": 21, "radius": 3.5, "elevation": 0.0,
                                 "look_at_height": 0.7, "fov": 39.6, "start_azimuth": 0.0,
                                 "direction": "counterclockwise", "width": 720, "height": 480}},
                "2": {"class_type": "CharacterShotSaveCameraRig",
                      "inputs": {"cameras": ["1", 0], "filename_prefix": prefix}}}

    before = sorted(str(p) for p in comfy.output_dir.rglob("*"))
    for prefix, why in (("winchk/CON", "reserved device name"), ("winchk/take:2", "contains ':'"),
                        ("winchk./rig", "ends in a dot"), ("C:\\winchk\\rig", "no drive"),
                        ("winchk/" + "x" * 250, "too long")):
        with pytest.raises(WorkflowError) as e:
            comfy.run(prompt(prefix), timeout=120)
        assert "filename_prefix" in str(e.value) and why in str(e.value), str(e.value)
    assert sorted(str(p) for p in comfy.output_dir.rglob("*")) == before
    hist = comfy.run(prompt("winchk\\rig"), timeout=120)        # a backslash is a folder separator, as on Windows
    ref = hist["outputs"]["2"]["charshot_files"][0]
    assert ref["subfolder"] == "winchk" and ref["filename"].startswith("rig_")


def test_only_the_naming_module_compares_paths_with_commonpath():
    """``commonpath`` raises ``ValueError`` for paths on two drives; ``naming.inside`` is the one place that calls
    it, and turns that into "not inside"."""
    import ast

    users = []
    for part in SHIPPED:
        p = REPO / part
        for f in [p] if p.is_file() else sorted(p.rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.Attribute, ast.Name)) and getattr(node, "attr", getattr(node, "id", "")) \
                        == "commonpath":
                    users.append(str(f.relative_to(REPO)))
    assert sorted(set(users)) == ["charactershot_core/naming.py"]
