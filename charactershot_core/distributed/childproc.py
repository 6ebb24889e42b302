"""Start, stop and watch a child process together with every process it starts, on POSIX and on Windows.

The Ray driver child (:mod:`.submit`) must be stoppable as a whole (it may have started a local Ray with its own
processes) and must not outlive the ComfyUI server that started it.  The two systems do this differently:

=================  =========================================  ===============================================
                   POSIX (Linux, macOS)                       Windows
=================  =========================================  ===============================================
start              its own session (``start_new_session``)    its own console process group
                                                              (``CREATE_NEW_PROCESS_GROUP``) inside a Job
                                                              object that kills every process in it when the
                                                              job is closed or the server dies
polite stop        ``SIGTERM`` to the process group           ``CTRL_BREAK_EVENT`` to the process group
                                                              (the child's ``SIGBREAK`` handler)
hard stop          ``SIGKILL`` to the process group           ``TerminateJobObject``; without a job,
                                                              ``taskkill /T /F /PID`` (the whole tree)
parent watch       ``os.getppid()`` changes / ``kill(pid,0)``  ``OpenProcess`` + ``WaitForSingleObject``
self stop          ``SIGTERM`` to itself                      ``signal.raise_signal(SIGTERM)``
=================  =========================================  ===============================================

``WINDOWS`` decides (tests set it to exercise the Windows branch on any system); every POSIX-only call sits in the
``else`` of an ``if WINDOWS:``.  On Windows ``os.kill(pid, 0)`` would *terminate* the process (it is
``TerminateProcess``), so the Windows branch never calls ``os.kill``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable

WINDOWS = sys.platform == "win32"

# Windows constants (winbase.h, winnt.h), spelled out so this module imports everywhere
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
CTRL_BREAK_EVENT = 1
SYNCHRONIZE = 0x00100000
WAIT_OBJECT_0 = 0
ERROR_INVALID_PARAMETER = 87           # OpenProcess of a process id that does not exist (any more)
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION = 9  # JOBOBJECTINFOCLASS


class JOBOBJECT_BASIC_LIMIT_INFORMATION(ctypes.Structure):
    _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64), ("PerJobUserTimeLimit", ctypes.c_int64),
                ("LimitFlags", ctypes.c_uint32), ("MinimumWorkingSetSize", ctypes.c_size_t),
                ("MaximumWorkingSetSize", ctypes.c_size_t), ("ActiveProcessLimit", ctypes.c_uint32),
                ("Affinity", ctypes.c_size_t), ("PriorityClass", ctypes.c_uint32),
                ("SchedulingClass", ctypes.c_uint32)]


class IO_COUNTERS(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
                                               "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]


class JOBOBJECT_EXTENDED_LIMIT_INFORMATION(ctypes.Structure):
    _fields_ = [("BasicLimitInformation", JOBOBJECT_BASIC_LIMIT_INFORMATION), ("IoInfo", IO_COUNTERS),
                ("ProcessMemoryLimit", ctypes.c_size_t), ("JobMemoryLimit", ctypes.c_size_t),
                ("PeakProcessMemoryUsed", ctypes.c_size_t), ("PeakJobMemoryUsed", ctypes.c_size_t)]


def _kernel32():
    """kernel32 with the prototypes used here (handles are pointer-sized: the default ``int`` would cut them)."""
    if not WINDOWS:
        raise OSError("kernel32 exists on Windows only")
    from ctypes import wintypes

    k = ctypes.WinDLL("kernel32", use_last_error=True)
    k.CreateJobObjectW.restype = wintypes.HANDLE
    k.CreateJobObjectW.argtypes = [ctypes.c_void_p, wintypes.LPCWSTR]
    k.SetInformationJobObject.restype = wintypes.BOOL
    k.SetInformationJobObject.argtypes = [wintypes.HANDLE, ctypes.c_int, ctypes.c_void_p, wintypes.DWORD]
    k.AssignProcessToJobObject.restype = wintypes.BOOL
    k.AssignProcessToJobObject.argtypes = [wintypes.HANDLE, wintypes.HANDLE]
    k.TerminateJobObject.restype = wintypes.BOOL
    k.TerminateJobObject.argtypes = [wintypes.HANDLE, wintypes.UINT]
    k.CloseHandle.restype = wintypes.BOOL
    k.CloseHandle.argtypes = [wintypes.HANDLE]
    k.OpenProcess.restype = wintypes.HANDLE
    k.OpenProcess.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
    k.WaitForSingleObject.restype = wintypes.DWORD
    k.WaitForSingleObject.argtypes = [wintypes.HANDLE, wintypes.DWORD]
    k.GetConsoleWindow.restype = wintypes.HWND
    return k


def _last_error() -> int:
    return ctypes.get_last_error() if hasattr(ctypes, "get_last_error") else 0


# ------------------------------------------------------------------------------------------------ Windows job
class Job:
    """A Windows Job object that kills all its processes when closed (``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE``): the
    child and everything it starts (children inherit the job) end with :meth:`terminate`, with :meth:`close`, and
    when the server holding the handle dies, however it dies."""

    def __init__(self, kernel32, handle):
        self.k, self.handle = kernel32, handle

    @classmethod
    def create(cls) -> Job | None:
        k = _kernel32()
        h = k.CreateJobObjectW(None, None)
        if not h:
            return None
        info = JOBOBJECT_EXTENDED_LIMIT_INFORMATION()
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if not k.SetInformationJobObject(h, JOB_OBJECT_EXTENDED_LIMIT_INFORMATION, ctypes.byref(info),
                                         ctypes.sizeof(info)):
            k.CloseHandle(h)
            return None
        return cls(k, h)

    def assign(self, proc) -> bool:
        return bool(self.k.AssignProcessToJobObject(self.handle, int(proc._handle)))

    def terminate(self, code: int = 1) -> bool:
        return self.handle is not None and bool(self.k.TerminateJobObject(self.handle, code))

    def close(self) -> None:
        if self.handle is not None:
            self.k.CloseHandle(self.handle)
            self.handle = None


def _has_console() -> bool:
    try:
        return bool(_kernel32().GetConsoleWindow())
    except (AttributeError, OSError):
        return False


# ------------------------------------------------------------------------------------------------ parent side
def popen_options() -> dict:
    """``subprocess.Popen`` keyword arguments that put the child (and its children) in a group of its own."""
    if WINDOWS:
        flags = CREATE_NEW_PROCESS_GROUP
        if not _has_console():  # a server without a console (a desktop app): no console window for the child
            flags |= CREATE_NO_WINDOW
        return {"creationflags": flags}
    else:
        return {"start_new_session": True}


class ChildTree:
    """A child process started in a group of its own; :meth:`stop` ends it and every process it started."""

    def __init__(self, args, stop_file: str | None = None, **popen_kw):
        self.job, self.stop_file = None, stop_file
        self.proc = subprocess.Popen(args, **popen_kw, **popen_options())
        if WINDOWS:
            job = None
            try:
                job = Job.create()
                if job is not None and not job.assign(self.proc):
                    job.close()  # (Windows 7 inside another job): taskkill /T is the fallback
                    job = None
            except (AttributeError, OSError, ValueError):
                job = None
            self.job = job

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, grace: float = 10.0, kill_wait: float = 5.0) -> None:
        """Ask the child to stop (it shuts its actors down), then end the whole group after ``grace`` seconds."""
        stop_tree(self.proc, self.job, grace, kill_wait, self.stop_file)

    def close(self) -> None:
        """After the child has ended: on Windows, close the job (ending any process it left behind)."""
        if self.job is not None:
            self.job.close()
            self.job = None


def _wait(proc, seconds: float) -> bool:
    try:
        proc.wait(seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


def _taskkill(pid: int) -> None:
    """End ``pid`` and its whole tree with Windows' own tool."""
    try:
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(int(pid))], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, creationflags=CREATE_NO_WINDOW,
                       timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        pass


def stop_tree(proc, job: Job | None = None, grace: float = 10.0, kill_wait: float = 5.0,
              stop_file: str | None = None) -> None:
    """Stop ``proc`` and the processes it started: politely first (POSIX ``SIGTERM`` to the process group, Windows
    ``CTRL_BREAK_EVENT`` to the console process group, and ``stop_file`` written, which the child watches where it
    shares no console with the server), then for good after ``grace`` seconds (``SIGKILL`` to the group; Windows:
    the job, or ``taskkill /T /F``)."""
    if proc.poll() is not None:
        return
    if WINDOWS:
        asked = False
        if stop_file:
            try:
                with open(stop_file, "w", encoding="utf-8"):
                    asked = True
            except OSError:
                pass
        try:
            proc.send_signal(CTRL_BREAK_EVENT)   # GenerateConsoleCtrlEvent for the child's process group
            asked = True
        except OSError:                          # no shared console
            pass
        if asked and _wait(proc, grace):
            return
        if job is None or not job.terminate():
            _taskkill(proc.pid)
        _wait(proc, kill_wait)
    else:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
            if proc.poll() is not None:
                return
            try:
                os.killpg(proc.pid, sig)
            except OSError:
                return
            if _wait(proc, wait):
                return


# ------------------------------------------------------------------------------------------------ child side
def parent_watch(parent_pid: int) -> Callable[[], bool]:
    """A function that tells whether the process ``parent_pid`` has ended.  Windows: a ``SYNCHRONIZE`` handle
    opened now (so a later process with the same id is never mistaken for the parent) and polled with
    ``WaitForSingleObject``.  POSIX: re-parenting, or ``kill(pid, 0)``."""
    if WINDOWS:
        k = _kernel32()
        handle = k.OpenProcess(SYNCHRONIZE, False, int(parent_pid))
        if not handle:
            gone_already = _last_error() == ERROR_INVALID_PARAMETER
            return lambda: gone_already   # no such process: gone; access refused: cannot watch

        def gone() -> bool:
            return k.WaitForSingleObject(handle, 0) == WAIT_OBJECT_0

        return gone
    else:
        def gone() -> bool:
            if os.getppid() != parent_pid:  # re-parented: the parent has exited
                return True
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
            return False

        return gone


def stop_self() -> None:
    """Raise ``SIGTERM`` in this process: its handler (``sys.exit``) runs on the main thread, through its
    ``finally`` blocks."""
    if WINDOWS:
        signal.raise_signal(signal.SIGTERM)
    else:
        os.kill(os.getpid(), signal.SIGTERM)


def stop_signals() -> list:
    """The signals that ask this child to stop: ``SIGTERM``, and on Windows the ``CTRL_BREAK_EVENT`` that
    :func:`stop_tree` sends (``SIGBREAK``)."""
    sigs = [signal.SIGTERM]
    if hasattr(signal, "SIGBREAK"):
        sigs.append(signal.SIGBREAK)
    return sigs
