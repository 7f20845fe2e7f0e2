"""Read a CTranslate2 ``model.bin`` (a container of named arrays) with numpy alone.

The layout, as ``ctranslate2/specs/model_spec.py:_serialize`` writes it
(binary versions 5 and 6; little-endian)::

    u32 binary_version
    str spec_name            str = u16 length (including a trailing NUL), bytes, NUL
    u32 spec_revision
    u32 n_variables
    n_variables x { str name, u8 rank, rank x u32 dim, u8 dtype_id, u32 n_bytes, n_bytes of data }
    u32 n_aliases
    n_aliases x { str alias, str variable_name }

``dtype_id`` indexes (float32, int8, int16, int32, float16, bfloat16). Aliases
name a variable that the converter found duplicated (Whisper's decoder
projection is its embedding); they resolve to the same array here.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from daetalker.errors import AssetError

SUPPORTED_VERSIONS = (5, 6)
BFLOAT16 = "bfloat16"
# dtype id -> numpy dtype (bfloat16 has none: read as uint16 and widened on request)
DTYPES: tuple[np.dtype | str, ...] = (
    np.dtype("<f4"), np.dtype("i1"), np.dtype("<i2"), np.dtype("<i4"), np.dtype("<f2"), BFLOAT16,
)


@dataclass
class CT2Model:
    path: Path
    binary_version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]  # read-only views into the file's bytes (bfloat16 as uint16)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> variable name
    bfloat16: frozenset[str] = frozenset()  # names whose uint16 data is bfloat16

    def __contains__(self, name: str) -> bool:
        return name in self.variables or name in self.aliases

    def get(self, name: str) -> np.ndarray:
        """The array ``name`` (aliases followed); bfloat16 widened to float32."""
        target = self.aliases.get(name, name)
        if target not in self.variables:
            raise AssetError(f"{self.path}: no variable {name!r} in this {self.spec} model")
        value = self.variables[target]
        if target in self.bfloat16:
            return (value.astype(np.uint32) << 16).view(np.float32)
        return value

    def scope(self, prefix: str) -> dict[str, np.ndarray]:
        """Every variable under ``prefix/`` (aliases included), keyed by the rest of its name."""
        names = [n for n in (*self.variables, *self.aliases) if n.startswith(prefix + "/")]
        return {n[len(prefix) + 1 :]: self.get(n) for n in sorted(names)}


class _Cursor:
    def __init__(self, data: bytes | memoryview, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise AssetError(f"{self.path}: truncated CTranslate2 model at byte {self.pos} (wanted {n} more bytes "
                             f"of {len(self.data)}); fetch it again (`daetalker assets --fetch`)")  # fmt: skip
        view = memoryview(self.data)[self.pos : self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        raw = bytes(self.take(self.unpack("H")))
        if not raw.endswith(b"\0"):
            raise AssetError(f"{self.path}: malformed string before byte {self.pos} (no NUL terminator)")
        return raw[:-1].decode("utf-8")


def _variable(cur: _Cursor) -> tuple[str, np.ndarray, bool]:
    name = cur.string()
    shape = tuple(cur.unpack("I") for _ in range(cur.unpack("B")))
    type_id, n_bytes = cur.unpack("B"), cur.unpack("I")
    if type_id >= len(DTYPES):
        raise AssetError(f"{cur.path}: variable {name!r} has unknown dtype id {type_id}")
    dtype = DTYPES[type_id]
    is_bf16 = dtype == BFLOAT16
    np_dtype = np.dtype("<u2") if is_bf16 else dtype
    if n_bytes != int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize:
        raise AssetError(f"{cur.path}: variable {name!r} of shape {shape} and dtype {dtype} holds {n_bytes} bytes")
    array = np.frombuffer(cur.take(n_bytes), dtype=np_dtype).reshape(shape)
    return name, array, is_bf16


def parse_ct2(data: bytes | memoryview, path: Path | str = "<bytes>") -> CT2Model:
    """Parse the bytes of a ``model.bin``; arrays are views into ``data``."""
    cur = _Cursor(data, Path(path))
    version = cur.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise AssetError(f"{path}: CTranslate2 binary version {version}; this reader knows {SUPPORTED_VERSIONS}")
    spec, revision = cur.string(), cur.unpack("I")
    variables, bf16 = {}, set()
    for _ in range(cur.unpack("I")):
        name, array, is_bf16 = _variable(cur)
        variables[name] = array
        if is_bf16:
            bf16.add(name)
    aliases = {}
    for _ in range(cur.unpack("I")):
        alias = cur.string()
        aliases[alias] = cur.string()
    missing = sorted(a for a, target in aliases.items() if target not in variables)
    if missing:
        raise AssetError(f"{path}: aliases {missing} name variables that are not in the file")
    if cur.pos != len(data):
        raise AssetError(f"{path}: {len(data) - cur.pos} bytes after the aliases; not a CTranslate2 model.bin")
    return CT2Model(Path(path), version, spec, revision, variables, aliases, frozenset(bf16))


def read_ct2(path: Path | str) -> CT2Model:
    """Parse ``path`` (a CTranslate2 ``model.bin``), memory-mapped: only the arrays used are read from disk."""
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"{path}: no such CTranslate2 model file")
    if path.stat().st_size == 0:
        raise AssetError(f"{path}: empty file, not a CTranslate2 model")
    with open(path, "rb") as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # the arrays keep it open
    return parse_ct2(data, path)
