"""Find calls that exist on one operating system only, outside a guard for that system, with the ``ast`` module.

POSIX-only: ``os.killpg``, ``os.setsid``, ``signal.SIGKILL``, ``fcntl``... (and ``os.kill``: on Windows it is
``TerminateProcess`` whatever the signal, so ``os.kill(pid, 0)`` ends the process it meant to probe).  Windows-only:
``msvcrt``, ``winreg``, ``ctypes.WinDLL``, ``signal.CTRL_BREAK_EVENT``...

A guard is a test the scanner understands, in an ``if`` statement, a conditional expression or an ``and`` chain:
``sys.platform == "win32"`` (``!=``, ``.startswith("win"|"linux"|"darwin")``), ``os.name == "nt"|"posix"``,
``platform.system() == "Windows"``, a module-level name bound to one of these (``WINDOWS = sys.platform ==
"win32"``), ``not`` of a guard, and ``hasattr(mod, "name")`` (which allows ``mod.name`` only).  The ``if`` body gets
the test's platform, the ``else`` the other one, and so do the statements after an ``if`` whose body always leaves
(``return``, ``raise``, ``continue``, ``break``).  An ``import`` of a one-system module inside ``try`` with an
``except ImportError`` (or ``ModuleNotFoundError``, ``Exception``) is guarded too.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

POSIX_ATTRS = {
    "os": {"killpg", "kill", "setsid", "getsid", "setpgrp", "getpgrp", "setpgid", "getpgid", "fork", "forkpty",
           "wait", "wait3", "wait4", "WNOHANG", "getuid", "geteuid", "getgid", "getegid", "getgroups", "setuid",
           "setgid", "seteuid", "setegid", "setgroups", "initgroups", "getresuid", "getresgid", "chown", "lchown",
           "fchown", "chroot", "mkfifo", "mknod", "major", "minor", "makedev", "nice", "getpriority", "setpriority",
           "getloadavg", "statvfs", "fstatvfs", "uname", "ttyname", "openpty", "posix_spawn", "posix_spawnp",
           "register_at_fork", "sync", "sched_getaffinity", "sched_setaffinity", "pipe2", "sysconf", "pathconf",
           "fpathconf", "confstr", "lchmod", "chflags", "lchflags", "O_NONBLOCK", "O_CLOEXEC", "O_NOFOLLOW",
           "O_DIRECTORY", "O_SYNC", "O_NOCTTY", "WIFEXITED", "WEXITSTATUS", "WIFSIGNALED", "WTERMSIG", "getlogin_r",
           "ctermid", "sendfile", "pread", "pwrite", "preadv", "pwritev", "posix_fadvise", "posix_fallocate"},
    "signal": {"SIGKILL", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD", "SIGQUIT", "SIGPIPE", "SIGSTOP",
               "SIGCONT", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGWINCH", "SIGXCPU", "SIGXFSZ", "SIGPROF", "SIGVTALRM",
               "SIGIO", "SIGPOLL", "SIGSYS", "SIGTRAP", "SIGBUS", "SIGURG", "SIGRTMIN", "SIGRTMAX", "alarm",
               "setitimer", "getitimer", "pause", "pthread_kill", "pthread_sigmask", "sigwait", "sigwaitinfo",
               "sigtimedwait", "sigpending", "siginterrupt", "ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF"},
}
POSIX_MODULES = {"fcntl", "resource", "pwd", "grp", "termios", "tty", "pty", "posix", "syslog", "crypt", "spwd",
                 "nis", "ossaudiodev", "readline"}
POSIX_KWARGS_ANY = {"preexec_fn", "start_new_session"}          # on any call: names no one else uses
POSIX_KWARGS_SUBPROCESS = {"pass_fds", "process_group", "user", "group", "extra_groups", "umask"}
SUBPROCESS_CALLS = {"Popen", "run", "call", "check_call", "check_output"}
WINDOWS_ATTRS = {
    "os": {"startfile", "O_BINARY", "O_NOINHERIT", "add_dll_directory"},
    "signal": {"SIGBREAK", "CTRL_C_EVENT", "CTRL_BREAK_EVENT"},
    "ctypes": {"WinDLL", "windll", "OleDLL", "oledll", "WinError", "FormatError", "get_last_error",
               "set_last_error", "HRESULT"},
    "subprocess": {"CREATE_NEW_PROCESS_GROUP", "CREATE_NO_WINDOW", "STARTUPINFO", "DETACHED_PROCESS",
                   "CREATE_NEW_CONSOLE", "STARTF_USESHOWWINDOW", "SW_HIDE"},
}
WINDOWS_MODULES = {"msvcrt", "winreg", "_winreg", "winsound", "_winapi", "win32api", "win32con", "win32job",
                   "win32process", "pywintypes", "wmi"}
GUARD_EXCEPTIONS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    api: str
    system: str  # "POSIX" or "Windows": the only system that has it

    def __str__(self):
        return f"{self.path}:{self.line}: {self.api} ({self.system}-only) outside a platform guard"


@dataclass(frozen=True)
class Ctx:
    platform: str | None = None               # "posix", "windows" or None (any)
    has: frozenset = frozenset()              # "mod.name" proven present by hasattr
    import_guarded: bool = False              # inside try/except ImportError

    def add(self, facts: Facts) -> Ctx:
        plat = facts.platform or self.platform
        return Ctx(plat, self.has | facts.has, self.import_guarded)


@dataclass
class Facts:
    platform: str | None = None
    has: frozenset = field(default_factory=frozenset)


def _other(p):
    return {"posix": "windows", "windows": "posix"}.get(p)


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str, tree: ast.Module):
        self.path = path
        self.found: list[Finding] = []
        self.aliases: dict[str, str] = {}      # local name -> module ("os", "signal", ...)
        self.guards: dict[str, str] = {}       # module-level name -> platform it is true on
        for node in tree.body:                 # module-level imports, needed to read the guards below
            if isinstance(node, ast.Import):
                for a in node.names:
                    self.aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        for node in tree.body:                 # names bound to a platform test at module level
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                facts = self._test(node.value, positive=True, names=False)
                if facts.platform and not facts.has:
                    self.guards[node.targets[0].id] = facts.platform
        self.ctx = Ctx()

    # ------------------------------------------------------------------ guards
    def _module_of(self, node) -> str | None:
        return self.aliases.get(node.id) if isinstance(node, ast.Name) else None

    def _is_sys_platform(self, node) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "platform" and self._module_of(node.value) == "sys"

    def _is_os_name(self, node) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "name" and self._module_of(node.value) == "os"

    def _is_platform_system(self, node) -> bool:
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "system"
                and self._module_of(node.func.value) == "platform")

    @staticmethod
    def _plat_of_value(value: str, kind: str) -> str | None:
        v = value.lower()
        if kind == "platform":
            return "windows" if v.startswith("win") else "posix"
        if kind == "osname":
            return {"nt": "windows", "posix": "posix"}.get(v)
        if kind == "system":
            return "windows" if v == "windows" else "posix" if v in ("linux", "darwin") else None
        return None

    def _test(self, node, positive: bool, names: bool = True) -> Facts:
        """What ``node`` being ``positive`` (true or false) proves."""
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return self._test(node.operand, not positive, names)
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And) == positive:   # all parts hold
                plat, has = None, frozenset()
                for v in node.values:
                    f = self._test(v, positive, names)
                    plat = plat or f.platform
                    has |= f.has
                return Facts(plat, has)
            return Facts()
        if names and isinstance(node, ast.Name) and node.id in self.guards:
            p = self.guards[node.id]
            return Facts(p if positive else _other(p))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hasattr" \
                and len(node.args) == 2 and isinstance(node.args[1], ast.Constant) and positive:
            mod = self._module_of(node.args[0])
            if mod:
                return Facts(None, frozenset({f"{mod}.{node.args[1].value}"}))
            return Facts()
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "startswith" \
                and self._is_sys_platform(node.func.value) and node.args and isinstance(node.args[0], ast.Constant):
            p = self._plat_of_value(str(node.args[0].value), "platform")
            return Facts(p if positive else _other(p))
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.comparators[0], ast.Constant) \
                and isinstance(node.comparators[0].value, str):
            left, op, value = node.left, node.ops[0], node.comparators[0].value
            kind = ("platform" if self._is_sys_platform(left) else "osname" if self._is_os_name(left)
                    else "system" if self._is_platform_system(left) else None)
            if kind is None:
                return Facts()
            p = self._plat_of_value(value, kind)
            if isinstance(op, ast.Eq):
                return Facts(p if positive else _other(p))
            if isinstance(op, ast.NotEq):
                return Facts(_other(p) if positive else p)
        return Facts()

    # ------------------------------------------------------------------ findings
    def _flag(self, node, api: str, system: str):
        self.found.append(Finding(self.path, node.lineno, api, system))

    def _check_attr(self, node: ast.Attribute):
        mod = self._module_of(node.value)
        if mod is None:
            return
        name = f"{mod}.{node.attr}"
        if name in self.ctx.has:
            return
        if node.attr in POSIX_ATTRS.get(mod, ()) and self.ctx.platform != "posix":
            self._flag(node, name, "POSIX")
        if node.attr in WINDOWS_ATTRS.get(mod, ()) and self.ctx.platform != "windows":
            self._flag(node, name, "Windows")

    def _check_module(self, node, module: str):
        top = module.split(".")[0]
        if self.ctx.import_guarded:
            return
        if top in POSIX_MODULES and self.ctx.platform != "posix":
            self._flag(node, f"import {module}", "POSIX")
        if top in WINDOWS_MODULES and self.ctx.platform != "windows":
            self._flag(node, f"import {module}", "Windows")

    # ------------------------------------------------------------------ visitors
    def visit_Import(self, node):
        for a in node.names:
            self.aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            self._check_module(node, a.name)

    def visit_ImportFrom(self, node):
        if node.module and node.level == 0:
            self._check_module(node, node.module)
            for a in node.names:
                fake = ast.Attribute(value=ast.Name(id="__mod__"), attr=a.name)
                ast.copy_location(fake, node)
                self.aliases["__mod__"] = node.module
                self._check_attr(fake)
                self.aliases.pop("__mod__")

    def visit_Attribute(self, node):
        self._check_attr(node)
        self.generic_visit(node)

    def visit_Call(self, node):
        func = node.func
        is_subprocess = (isinstance(func, ast.Attribute) and func.attr in SUBPROCESS_CALLS
                         and self._module_of(func.value) == "subprocess")
        for kw in node.keywords:
            if kw.arg is None or self.ctx.platform == "posix":
                continue
            const = isinstance(kw.value, ast.Constant)
            off = (const and kw.value.value is None) or (const and kw.arg == "start_new_session" and not kw.value.value) \
                or (kw.arg == "pass_fds" and isinstance(kw.value, ast.Tuple) and not kw.value.elts)
            if not off and (kw.arg in POSIX_KWARGS_ANY or (is_subprocess and kw.arg in POSIX_KWARGS_SUBPROCESS)):
                self._flag(kw.value, f"{kw.arg}=", "POSIX")
        if isinstance(func, ast.Attribute) and func.attr in ("get_context", "set_start_method") and node.args \
                and isinstance(node.args[0], ast.Constant) and node.args[0].value in ("fork", "forkserver") \
                and self.ctx.platform != "posix":
            self._flag(node, f"{func.attr}({node.args[0].value!r})", "POSIX")
        self.generic_visit(node)

    def _with(self, ctx: Ctx, nodes):
        saved, self.ctx = self.ctx, ctx
        try:
            for n in nodes if isinstance(nodes, list) else [nodes]:
                self.visit(n)
        finally:
            self.ctx = saved

    def _block(self, stmts):
        """Statements in order; after an ``if`` one of whose branches always leaves, the rest get the other's facts."""
        saved = self.ctx
        try:
            for s in stmts:
                self.visit(s)
                if isinstance(s, ast.If):
                    if _leaves(s.body) and not (s.orelse and _leaves(s.orelse)):
                        self.ctx = self.ctx.add(self._test(s.test, False))
                    elif s.orelse and _leaves(s.orelse):
                        self.ctx = self.ctx.add(self._test(s.test, True))
        finally:
            self.ctx = saved

    def visit_If(self, node):
        self.visit(node.test)
        self._with_block(self.ctx.add(self._test(node.test, True)), node.body)
        self._with_block(self.ctx.add(self._test(node.test, False)), node.orelse)

    def _with_block(self, ctx, stmts):
        saved, self.ctx = self.ctx, ctx
        try:
            self._block(stmts)
        finally:
            self.ctx = saved

    def visit_IfExp(self, node):
        self.visit(node.test)
        self._with(self.ctx.add(self._test(node.test, True)), node.body)
        self._with(self.ctx.add(self._test(node.test, False)), node.orelse)

    def visit_BoolOp(self, node):
        saved = self.ctx
        try:
            for v in node.values:
                self.visit(v)
                # in "a and b" b runs only where a is true; in "a or b" only where a is false
                self.ctx = self.ctx.add(self._test(v, isinstance(node.op, ast.And)))
        finally:
            self.ctx = saved

    def visit_Try(self, node):
        catches = any(h.type is None or any(isinstance(n, ast.Name) and n.id in GUARD_EXCEPTIONS
                                            for n in ([h.type] if not isinstance(h.type, ast.Tuple) else h.type.elts))
                      for h in node.handlers)
        body_ctx = Ctx(self.ctx.platform, self.ctx.has, self.ctx.import_guarded or catches)
        self._with_block(body_ctx, node.body)
        for h in node.handlers:
            self.visit(h)
        self._block(node.orelse)
        self._block(node.finalbody)

    visit_TryStar = visit_Try

    def _body_visitor(self, node):
        for f in ast.iter_fields(node):
            value = f[1]
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                self._block(value)
            elif isinstance(value, list):
                for v in value:
                    if isinstance(v, ast.AST):
                        self.visit(v)
            elif isinstance(value, ast.AST):
                self.visit(value)

    visit_Module = visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _body_visitor
    visit_For = visit_AsyncFor = visit_While = visit_With = visit_AsyncWith = visit_ExceptHandler = _body_visitor


def _leaves(stmts) -> bool:
    return bool(stmts) and isinstance(stmts[-1], (ast.Return, ast.Raise, ast.Continue, ast.Break))


def scan_source(source: str, path: str = "<string>") -> list[Finding]:
    tree = ast.parse(source, path)
    s = _Scanner(path, tree)
    s.visit(tree)
    return s.found


def scan_paths(root: Path, parts: list[str]) -> list[Finding]:
    found = []
    for part in parts:
        p = root / part
        files = [p] if p.is_file() else sorted(p.rglob("*.py"))
        for f in files:
            found += scan_source(f.read_text(encoding="utf-8"), str(f.relative_to(root)))
    return found
