"""What a request may do inside the local stack's model actor (loaded by Ray workers, not by mapflow).

NDIF runs a request's traced block (arbitrary Python a client shipped) in the model actor's process, beside the
weights. Two guards make one client unable to harm another:

- `restricted()`: while the block is deserialised and run (on the thread that runs it), a Python audit hook refuses
  opening any file for writing, reading files outside Python's own installation and import paths, deleting,
  renaming or changing files and directories, starting processes or threads, sending signals, opening sockets,
  loading native code through ctypes, and replacing attributes of torch's or transformers' classes. A refused
  operation raises `PermissionError` in the block, so the request fails with that message.
- `CodeGuard`: the attributes of the model's classes (every class in the MRO of every submodule, and
  ``torch.Tensor``) and of the modules that define them (plus ``torch`` and ``torch.nn.functional``), taken at load
  and compared after each request; a request that replaced or added one (a patched ``forward``, a swapped
  ``softmax``) fails, naming it, and the originals are put back. Python audits no such assignment, so it is found
  after the fact, before the next request.
- `WeightsGuard`: a digest of every parameter and buffer, taken when the model is loaded and compared after each
  request (and before the next); a request that changed one fails, naming the tensors, and the actor reloads the
  checkpoint before it serves anything else. Each request therefore starts from the same weights.

Audit hooks are a guard against what a study does through Python, not a boundary against native exploits: see the
docs/security.md for what that means when a server is exposed.
"""

from __future__ import annotations

import _thread
import contextlib
import hashlib
import os
import sys
import threading

_guarded = threading.local()

# Audit events refused outright while a request runs (https://docs.python.org/3/library/audit_events.html).
REFUSED = {
    # processes and signals
    "os.system": "starting processes",
    "subprocess.Popen": "starting processes",
    "os.exec": "starting processes",
    "os.posix_spawn": "starting processes",
    "os.spawn": "starting processes",
    "os.fork": "starting processes",
    "os.forkpty": "starting processes",
    "pty.spawn": "starting processes",
    "os.kill": "sending signals",
    "os.killpg": "sending signals",
    # the network
    "socket.__new__": "network access",
    "socket.connect": "network access",
    "socket.bind": "network access",
    "socket.getaddrinfo": "network access",
    "socket.gethostbyname": "network access",
    "socket.sendto": "network access",
    "socket.sendmsg": "network access",
    "urllib.Request": "network access",
    # changing the file system
    "os.remove": "changing files",
    "os.rename": "changing files",
    "os.mkdir": "changing files",
    "os.rmdir": "changing files",
    "os.chmod": "changing files",
    "os.chown": "changing files",
    "os.link": "changing files",
    "os.symlink": "changing files",
    "os.truncate": "changing files",
    "os.utime": "changing files",
    "os.chdir": "changing the working directory",
    "shutil.rmtree": "changing files",
    "shutil.move": "changing files",
    "shutil.copyfile": "changing files",
    "os.putenv": "changing the environment",
    "os.unsetenv": "changing the environment",
    # native code, and hooks that would outlive the request
    "ctypes.dlopen": "loading native code",
    "ctypes.dlsym": "loading native code",
    "ctypes.call_function": "calling native code",
    "ctypes.cdata": "reading raw memory",
    "ctypes.addressof": "reading raw memory",
    "ctypes.string_at": "reading raw memory",
    "ctypes.wstring_at": "reading raw memory",
    "ctypes.PyObj_FromPtr": "reading raw memory",
    "sys.addaudithook": "adding audit hooks",
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _readable_roots() -> tuple[str, ...]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *(p for p in sys.path if p and os.path.isdir(p))}
    return tuple(sorted({os.path.realpath(r).rstrip("/") + "/" for r in roots}))


_READABLE = _readable_roots()


def _refusal(what: str) -> PermissionError:
    return PermissionError(
        f"refused by the mapflow NDIF server: {what} is not allowed inside a request (a request "
        "may read and edit activations and attention, never files, processes, the network or "
        "the deployed weights)"
    )


def _check_open(args) -> None:
    path, mode, flags = (tuple(args) + (None, None, None))[:3]
    writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        isinstance(flags, int) and flags & _WRITE_FLAGS
    )
    if writing:
        raise _refusal(f"writing the file {path!r}")
    if isinstance(path, int) or path is None:
        return
    real = os.path.realpath(os.fsdecode(path))
    if not (real + "/").startswith(_READABLE) and not real.startswith(_READABLE):
        raise _refusal(f"reading the file {real!r}")


def _hook(event: str, args) -> None:
    if not getattr(_guarded, "on", False):
        return
    _guarded.on = False  # the checks below must not audit themselves
    try:
        if event in REFUSED:
            raise _refusal(REFUSED[event])
        if event == "open":
            _check_open(args)
    finally:
        _guarded.on = True


_start_new_thread = _thread.start_new_thread
_installed = False


def _guarded_start_new_thread(*args, **kwargs):
    if getattr(_guarded, "on", False):
        raise _refusal("starting threads")
    return _start_new_thread(*args, **kwargs)


def install() -> None:
    """Add the audit hook (for the life of the process: Python cannot remove one) and, as Python 3.11 audits no
    thread start and a thread started by a request would run unguarded, refuse starting threads while guarded."""
    global _installed
    if _installed:
        return
    sys.addaudithook(_hook)
    _thread.start_new_thread = _guarded_start_new_thread
    threading._start_new_thread = _guarded_start_new_thread
    _installed = True


@contextlib.contextmanager
def restricted():
    """Refuse the operations above on this thread until the block exits."""
    install()
    _guarded.on = True
    try:
        yield
    finally:
        _guarded.on = False


def tensor_digests(module) -> dict[str, str]:
    """name -> digest of the raw bytes, dtype and shape of every parameter and buffer (shared ones once per name)."""
    import torch

    digests = {}
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        data = tensor.detach()
        if data.device.type != "cpu":
            data = data.cpu()
        data = data.contiguous()
        digest = hashlib.blake2b(f"{data.dtype}{tuple(data.shape)}".encode(), digest_size=16)
        if data.numel():
            digest.update(data.view(-1).view(torch.uint8).numpy())
        digests[name] = digest.hexdigest()
    return digests


class CodeGuard:
    """The model's code as the first load left it: (owner, name) -> the object, for the classes and modules above."""

    def __init__(self, module):
        import torch

        classes = {torch.Tensor}
        for submodule in module.modules():
            classes.update(c for c in type(submodule).__mro__ if c is not object)
        modules = {
            torch,
            torch.nn.functional,
            *(sys.modules[c.__module__] for c in classes if c.__module__ in sys.modules),
        }
        self.owners = [*classes, *modules]
        self.expected = {id(owner): dict(vars(owner)) for owner in self.owners}

    def restore_changed(self) -> list[str]:
        """Put back every replaced, removed or (on a class) added attribute; return their names."""
        import types

        changed = []
        for owner in self.owners:
            expected, now = self.expected[id(owner)], vars(owner)
            label = getattr(owner, "__qualname__", None) or getattr(owner, "__name__", "?")
            if isinstance(owner, types.ModuleType):
                label = owner.__name__
            for name, value in expected.items():
                if now.get(name, _MISSING) is not value:
                    changed.append(f"{label}.{name}")
                    if not isinstance(owner, type) or name not in ("__dict__", "__weakref__"):
                        setattr(owner, name, value)
            if isinstance(owner, type):  # new names on a module are lazy imports; on a class they shadow its bases
                for name in [n for n in now if n not in expected and n not in CLASS_CACHES]:
                    changed.append(f"{label}.{name}")
                    delattr(owner, name)
        return changed


_MISSING = object()
CLASS_CACHES = {"__slotnames__"}  # what Python itself stores on a class on first use (copyreg, when pickling)


class WeightsGuard:
    """The deployed weights' digests, and which tensors differ from them now."""

    def __init__(self, module):
        self.expected = tensor_digests(module)

    def changed(self, module) -> list[str]:
        now = tensor_digests(module)
        names = set(self.expected) | set(now)
        return sorted(name for name in names if self.expected.get(name) != now.get(name))
