"""PyTorch checkpoints in the legacy (pre-zip) format read into numpy arrays, without torch.

`torch.load` would need torch (hundreds of MB) and, like any `pickle.load`, runs whatever classes a
file names. The format is simple enough to read directly: five pickles and the raw storages. Our
unpickler rebuilds only tensors, an OrderedDict and plain data; any other class in a file is refused.

Layout (torch/serialization.py, `_legacy_save`): pickled magic number, protocol version, system
info; the main pickle, whose storages are persistent ids; the list of storage keys; then each
storage as a little-endian int64 element count followed by its bytes.
"""

from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class CheckpointError(ValueError):
    """A checkpoint that is not a readable legacy PyTorch file; the message names the file."""


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: np.dtype
    size: int


@dataclass(frozen=True)
class _TensorView:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *_):
    return _TensorView(storage, int(storage_offset), tuple(size), tuple(stride))


class _TensorsOnly(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(np.dtype(STORAGE_DTYPES[name]))
        raise CheckpointError(f"{self.path}: refuses to load {module}.{name}; only tensors are read from a checkpoint")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise CheckpointError(f"{self.path}: unexpected persistent id {pid!r:.80}")
        return _Storage(str(pid[2]), pid[1].dtype, int(pid[4]))


def _load_pickle(file, path: Path):
    try:
        return _TensorsOnly(file, path).load()
    except CheckpointError:
        raise
    except Exception as error:  # pickle raises many types on damaged input
        raise CheckpointError(f"{path}: damaged or not a PyTorch checkpoint ({type(error).__name__}: {error})") from None


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a legacy-format PyTorch checkpoint (a state dict), by name, as numpy arrays."""
    path = Path(path)
    with path.open("rb") as file:
        if file.read(2) == b"PK":
            raise CheckpointError(f"{path}: is in torch's zip format; only the legacy (pre-1.6) format is read")
        file.seek(0)
        if _load_pickle(file, path) != MAGIC_NUMBER:
            raise CheckpointError(f"{path}: not a legacy PyTorch checkpoint (wrong magic number)")
        if (version := _load_pickle(file, path)) != PROTOCOL_VERSION:
            raise CheckpointError(f"{path}: checkpoint protocol version {version!r}, expected {PROTOCOL_VERSION}")
        system = _load_pickle(file, path)
        if isinstance(system, dict) and not system.get("little_endian", True):
            raise CheckpointError(f"{path}: written on a big-endian machine, which this reader does not handle")
        state = _load_pickle(file, path)
        keys = _load_pickle(file, path)
        if not isinstance(state, dict) or not isinstance(keys, list):
            raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
        storages = _read_storages(file, path, keys, state)
    return {name: _materialise(view, storages, path, name) for name, view in state.items()}


def _read_storages(file, path: Path, keys: list, state: dict) -> dict[str, np.ndarray]:
    declared = {view.storage.key: view.storage for view in state.values() if isinstance(view, _TensorView)}
    storages = {}
    for key in keys:
        if key not in declared:
            raise CheckpointError(f"{path}: storage {key!r} is listed but no tensor uses it")
        storage = declared[key]
        count = np.frombuffer(file.read(8), "<i8")
        if count.size != 1 or int(count[0]) != storage.size:
            raise CheckpointError(f"{path}: storage {key!r} is truncated or its size does not match its tensors")
        data = file.read(storage.size * storage.dtype.itemsize)
        if len(data) != storage.size * storage.dtype.itemsize:
            raise CheckpointError(
                f"{path}: truncated in storage {key!r} ({len(data)} of {storage.size * storage.dtype.itemsize} bytes)"
            )
        storages[key] = np.frombuffer(data, storage.dtype)
    if file.read(1):
        raise CheckpointError(f"{path}: has bytes after its last storage")
    return storages


def _materialise(view, storages: dict[str, np.ndarray], path: Path, name: str) -> np.ndarray:
    if not isinstance(view, _TensorView):
        raise CheckpointError(f"{path}: entry {name!r} is a {type(view).__name__}, not a tensor")
    if view.storage.key not in storages:
        raise CheckpointError(f"{path}: tensor {name!r} uses storage {view.storage.key!r}, which the file does not contain")
    flat = storages[view.storage.key]
    extent = view.offset + sum((n - 1) * s for n, s in zip(view.shape, view.stride, strict=True)) + 1
    if min(view.shape, default=1) > 0 and extent > flat.size:
        raise CheckpointError(f"{path}: tensor {name!r} reaches past the end of its storage")
    strides = tuple(s * flat.itemsize for s in view.stride)
    return np.lib.stride_tricks.as_strided(flat[view.offset :], view.shape, strides).astype(flat.dtype.newbyteorder("="))
