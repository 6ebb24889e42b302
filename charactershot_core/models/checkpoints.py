"""Reading and writing checkpoint files without pickle.

* :class:`SafetensorsFile`: a safetensors file whose header is read and checked up front by ``safetensors.safe_open``
  (not safetensors, truncated, bad offsets: a :class:`CheckpointError` naming the file) and whose tensors are memory-mapped and read one
  at a time, in the dtype asked for.
* :class:`TensorStore`: a read-only mapping ``name -> lazily read tensor`` over one file, several shards, a ``.pt``
  state dict (``torch.load(weights_only=True)``) or tensors in memory, with key prefixes stripped or added.
* :class:`StreamingSafetensorsWriter`: writes a safetensors file tensor by tensor (the header first, from shapes and
  dtypes known in advance), into a temporary file renamed into place at the end, so a converter never holds a whole
  model in memory and never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

import torch

from ..errors import CheckpointError

# safetensors dtype names <-> torch dtypes
ST_TO_TORCH: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
TORCH_TO_ST: dict[torch.dtype, str] = {v: k for k, v in ST_TO_TORCH.items()}
ST_ITEMSIZE: dict[str, int] = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                               "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _fmt_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class SafetensorsFile:
    """A safetensors file: header checked on open, tensors read lazily through a memory map."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        self.tensors, self.metadata = read_safetensors_header(self.path)
        self._handle = None

    def _open(self):
        if self._handle is None:
            from safetensors import safe_open

            try:
                self._handle = safe_open(self.path, framework="pt", device="cpu")
            except Exception as e:  # noqa: BLE001 - safetensors raises its own error type
                raise CheckpointError(f"{self.path}: cannot be read as safetensors ({e})") from None
        return self._handle

    def get(self, name: str) -> torch.Tensor:
        try:
            return self._open().get_tensor(name)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{self.path}: tensor {name!r} cannot be read ({e})") from None

    def close(self) -> None:
        self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_safetensors_header(path: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Read and check a safetensors header with ``safetensors.safe_open``: ``({name: TensorInfo}, metadata)``.

    The library validates the header (JSON, dtypes, offsets that tile the data, the file's length); its errors become
    a :class:`CheckpointError` naming the file and saying what to do (missing, not safetensors, truncated).
    """
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: file not found")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            raw = {name: (f.get_slice(name).get_dtype(), f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type (SafetensorError)
        raise _header_error(path, e) from None
    tensors: dict[str, TensorInfo] = {}
    for name, (dt, shape) in raw.items():
        if dt not in ST_TO_TORCH:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dt}")
        tensors[name] = TensorInfo(ST_TO_TORCH[dt], tuple(int(s) for s in shape))
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def _header_error(path: str, e: Exception) -> CheckpointError:
    """The user's words for a header safetensors refused."""
    size = os.path.getsize(path)
    msg = str(e)
    if "incomplete metadata" in msg or "not fully covered" in msg:
        return CheckpointError(
            f"{path}: truncated: its {_fmt_size(size)} do not hold the tensor data its header describes; the "
            "download or copy was probably interrupted, get the file again")
    return CheckpointError(f"{path}: not a safetensors file ({msg}); expected a .safetensors checkpoint (pickled "
                           ".ckpt/.bin files are not loaded)")


# ------------------------------------------------------------------------------------------------------ stores
class TensorStore(Mapping):
    """A read-only mapping name -> tensor, read lazily.  ``info(name)`` gives dtype and shape without reading."""

    def __init__(self, infos: dict[str, TensorInfo], getter: Callable[[str], torch.Tensor], source: str,
                 metadata: dict[str, str] | None = None, files: list[SafetensorsFile] | None = None):
        self._infos = infos
        self._getter = getter
        self.source = source
        self.metadata = dict(metadata or {})
        self._files = files or []

    # Mapping
    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._infos:
            raise KeyError(name)
        return self._getter(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def __contains__(self, name) -> bool:
        return name in self._infos

    def info(self, name: str) -> TensorInfo:
        return self._infos[name]

    def infos(self) -> dict[str, TensorInfo]:
        return dict(self._infos)

    def close(self) -> None:
        for f in self._files:
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Views
    def with_prefix_removed(self, prefix: str, keep_others: bool = False) -> "TensorStore":
        """Keys starting with ``prefix`` without it; other keys dropped (or kept as they are)."""
        if not prefix:
            return self
        mapping = {}
        for k in self._infos:
            if k.startswith(prefix):
                mapping[k[len(prefix):]] = k
            elif keep_others:
                mapping.setdefault(k, k)
        return self.renamed(mapping)

    def renamed(self, mapping: dict[str, str]) -> "TensorStore":
        """A view with ``{new_name: old_name}``."""
        infos = {new: self._infos[old] for new, old in mapping.items()}
        getter = self._getter
        return TensorStore(infos, lambda n: getter(mapping[n]), self.source, self.metadata, self._files)

    def subset(self, names: Iterable[str]) -> "TensorStore":
        names = [n for n in names if n in self._infos]
        return self.renamed({n: n for n in names})


def open_safetensors(path: str) -> TensorStore:
    f = SafetensorsFile(path)
    return TensorStore(f.tensors, f.get, f.path, f.metadata, [f])


def open_sharded(files: list[str], source: str, index: dict | None = None) -> TensorStore:
    """Several safetensors shards as one store (the index's weight map is checked when given)."""
    opened = [SafetensorsFile(p) for p in files]
    infos: dict[str, TensorInfo] = {}
    owner: dict[str, SafetensorsFile] = {}
    for f in opened:
        for k, info in f.tensors.items():
            if k in infos:
                raise CheckpointError(f"{source}: tensor {k!r} appears in two shards ({owner[k].path}, {f.path})")
            infos[k] = info
            owner[k] = f
    if index is not None:
        wm = index.get("weight_map") or {}
        missing = [k for k in wm if k not in infos]
        if missing:
            raise CheckpointError(f"{source}: the shard index lists {len(missing)} tensor(s) no shard holds, e.g. "
                                  f"{missing[:5]}; a shard is missing or incomplete")
    meta: dict[str, str] = {}
    for f in opened:
        meta.update(f.metadata)
    return TensorStore(infos, lambda n: owner[n].get(n), source, meta, opened)


def store_from_tensors(tensors: Mapping[str, torch.Tensor], source: str,
                       metadata: dict[str, str] | None = None) -> TensorStore:
    infos = {k: TensorInfo(v.dtype, tuple(v.shape)) for k, v in tensors.items()}
    return TensorStore(infos, lambda n: tensors[n], source, metadata)


def load_pt_tensors(path: str, what: str) -> object:
    """``torch.load(path, weights_only=True)`` with a clear error: never unpickles arbitrary objects."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: file not found ({what})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except Exception as e:  # noqa: BLE001 - torch raises many kinds here
        raise CheckpointError(f"{path}: cannot be read as a tensor file for {what} without unpickling code "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _is_zip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def unwrap_state_dict(obj: object, path: str, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a loaded ``.pt``: raw, or under ``state_dict``/``module``/``model``."""
    if isinstance(obj, dict):
        for key in ("state_dict", "module", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and len(obj) <= 3 and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        if not bad and obj:
            return dict(obj)
        if not obj:
            raise CheckpointError(f"{path}: holds an empty dict; expected the {what} state dict")
        raise CheckpointError(f"{path}: expected a state dict of tensors for {what}, found non-tensor entries "
                              f"{[str(b) for b in bad[:5]]}")
    raise CheckpointError(f"{path}: expected a state dict (dict of tensors) for {what}, found "
                          f"{type(obj).__name__}")


def strip_common_prefixes(keys: Iterable[str], prefixes: Iterable[str]) -> dict[str, str]:
    """``{stripped: original}`` removing, repeatedly, any of ``prefixes`` every key shares."""
    keys = list(keys)
    mapping = {k: k for k in keys}
    changed = True
    while changed and mapping:
        changed = False
        for p in prefixes:
            if all(k.startswith(p) for k in mapping):
                mapping = {k[len(p):]: v for k, v in mapping.items()}
                changed = True
    return mapping


# ------------------------------------------------------------------------------------------------------ writing
class StreamingSafetensorsWriter:
    """Write a safetensors file one tensor at a time, atomically.

    ``plan`` gives every tensor's name, dtype and shape in file order; ``write(name, tensor)`` must then be called
    in that order.  The data goes to ``path + '.partial'``; ``close()`` checks everything was written and renames
    it into place; ``abort()`` (or an exception inside ``with``) removes it.

    Hand-written on purpose: safetensors' own writers (``save_file``, ``serialize``) take all tensors at once, so
    converting a model larger than the memory cannot use them; this writes the standard header and streams the data.
    """

    def __init__(self, path: str, plan: list[tuple[str, torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None):
        self.path = os.fspath(path)
        self.tmp = f"{self.path}.partial{os.getpid()}"
        header: dict = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        offset = 0
        self._order = []
        for name, dtype, shape in plan:
            if dtype not in TORCH_TO_ST:
                raise CheckpointError(f"{self.path}: cannot store {name!r} with dtype {dtype}")
            st = TORCH_TO_ST[dtype]
            nbytes = math.prod(shape) * ST_ITEMSIZE[st]
            header[name] = {"dtype": st, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            self._order.append((name, dtype, tuple(shape), nbytes))
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._f = open(self.tmp, "wb")
        self._f.write(struct.pack("<Q", len(raw)))
        self._f.write(raw)
        self._next = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self._next >= len(self._order):
            raise RuntimeError(f"{self.path}: more tensors written than planned ({name!r})")
        exp_name, dtype, shape, nbytes = self._order[self._next]
        if name != exp_name or tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise RuntimeError(f"{self.path}: expected {exp_name} {dtype} {list(shape)}, got {name} {tensor.dtype} "
                               f"{list(tensor.shape)}")
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        if t.numel():
            self._f.write(t.view(torch.uint8).numpy().tobytes())
        self._next += 1

    def close(self) -> None:
        if self._f is None:
            return
        if self._next != len(self._order):
            self.abort()
            raise RuntimeError(f"{self.path}: only {self._next} of {len(self._order)} tensors were written")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if os.path.exists(self.tmp):
            os.remove(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        else:
            self.close()


def save_safetensors_atomic(path: str, tensors: Mapping[str, torch.Tensor],
                            metadata: dict[str, str] | None = None) -> None:
    """Small helper: a dict of tensors written through :class:`StreamingSafetensorsWriter`."""
    plan = [(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()]
    with StreamingSafetensorsWriter(path, plan, metadata) as w:
        for k, v in tensors.items():
            w.write(k, v)


def atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.partial{os.getpid()}"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
