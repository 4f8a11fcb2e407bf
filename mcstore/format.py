"""Tree format version 1: level arithmetic, array layout, shard / delta / commit encodings.

Nothing here does I/O. See ``mcstore/__init__.py`` for the layout on storage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache

import crc32c as _crc32c
import numpy as np

FORMAT = 1
HUGE_ROWS = 2**40  # every array is created once with this many rows; visibility comes from commits
MAX_LEVEL = 12
SEG_SHARD = 128  # segment rows per shard (segments are not token-aligned)
HEAP_SHARD = 4096  # bytes of segment text per shard
HEAP_CHUNK = 1024
DTYPES = {"float16": "float16", "bfloat16": "uint16"}  # logical -> stored
NO_OFFSET = 2**64 - 1
MAX_SHARD_BYTES = 2**30  # one encoded shard (chunks and index): far beyond any sane geometry


def crc32c(data) -> int:
    return _crc32c.crc32c(data)


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def short_hash(obj) -> str:
    """64 bits of sha256 (16 hex digits) of bytes or of canonical JSON: names of gist sets."""
    raw = obj if isinstance(obj, bytes | bytearray) else canonical_json(obj)
    return hashlib.sha256(raw).hexdigest()[:16]


# ---------------------------------------------------------------------- level arithmetic
BLOCK = 32  # tokens per level-1 node, and children per node above (a new tree's default)


def span(level: int, index: int, block: int = BLOCK) -> tuple[int, int]:
    """Tokens covered by node (level, index)."""
    w = block**level
    return index * w, (index + 1) * w


def num_nodes(length: int, level: int, block: int = BLOCK) -> int:
    return length // block**level


def num_levels(length: int, block: int = BLOCK) -> int:
    """Levels (counting level 0) that hold at least one node."""
    if length <= 0:
        return 0
    n, lv = 1, 1
    while length // block**lv > 0:
        n, lv = n + 1, lv + 1
    return n


def completed(old: int, new: int, level: int, block: int = BLOCK) -> tuple[int, int]:
    """Node index range [a, b) at ``level`` that growing the timeline old -> new completes."""
    return old // block**level, new // block**level


# ---------------------------------------------------------------------- arrays
@dataclass(frozen=True)
class ArraySpec:
    name: str  # physical name, directory under arrays/
    dtype: str  # stored numpy dtype (little-endian)
    width: int  # 0 for scalar rows, else row length (gists)
    chunk_rows: int
    shard_rows: int
    kind: str  # "level" (token-aligned, rows = length // block**level), "seg", "heap"
    level: int = 0

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize * max(1, self.width)

    @property
    def chunks_per_shard(self) -> int:
        return self.shard_rows // self.chunk_rows

    @property
    def chunk_nbytes(self) -> int:  # encoded: data + crc32c
        return self.chunk_rows * self.itemsize + 4

    @property
    def index_nbytes(self) -> int:
        return self.chunks_per_shard * 16 + 4

    @property
    def shard_nbytes(self) -> int:
        return self.chunks_per_shard * self.chunk_nbytes + self.index_nbytes

    def row_shape(self) -> tuple[int, ...]:
        return (self.width,) if self.width else ()

    def empty(self, n: int = 0) -> np.ndarray:
        return np.zeros((n, *self.row_shape()), dtype=self.dtype)

    def chunk_key(self, shard: int) -> str:
        return f"arrays/{self.name}/c/{shard}/0" if self.width else f"arrays/{self.name}/c/{shard}"

    def from_bytes(self, raw: bytes | memoryview) -> np.ndarray:
        return np.frombuffer(raw, dtype=np.dtype(self.dtype).newbyteorder("<")).reshape(
            -1, *self.row_shape()
        )


@dataclass(frozen=True)
class Extent:
    """How far one version reaches. Every array's row count follows from these: token-aligned
    arrays from ``length``, segment rows from ``nseg``, segment text bytes from ``nheap``;
    ``gset`` names the gist arrays in use."""

    length: int
    nseg: int
    nheap: int
    gset: str = ""

    def arrays(self, block: int) -> list[str]:
        return array_names(self.length, block, self.gset)


def splice(read_old, old_rows: int, fresh: np.ndarray, a: int, b: int) -> np.ndarray:
    """Rows [a, b) of an array whose rows below ``old_rows`` come from ``read_old(a, b)``
    and whose rows from ``old_rows`` on are ``fresh`` (committed rows + new rows, or shard
    rows + tail rows: the one join every read and write of the store makes)."""
    parts = []
    if a < old_rows:
        parts.append(read_old(a, min(b, old_rows)))
    if b > old_rows:
        parts.append(fresh[max(a, old_rows) - old_rows : b - old_rows])
    if not parts:
        return fresh[:0]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@dataclass(frozen=True)
class Geometry:
    """Static facts of a tree, from the root's attrs["megacontext"]."""

    block: int
    dim: int
    dtype: str  # logical: float16 | bfloat16
    epoch: int  # tokens per shard of the token array; every level's shards close at multiples

    @property
    def stored_dtype(self) -> str:
        return DTYPES[self.dtype]

    def largest_shard(self) -> int:
        """Bytes of this geometry's largest encoded shard: the token shard or a level-1 one
        (deeper levels hold fewer rows); a reader may hold one in memory, and a root whose
        facts make it absurd is refused (``MAX_SHARD_BYTES``)."""
        names = ["tokens", "seg_start", "seg_heap", *gist_names(1, ""), "created_1", "flags_1"]
        return max(self.spec(n).shard_nbytes for n in names)

    def level_shard_rows(self, level: int) -> int:
        return max(1, self.epoch // self.block**level)

    def rows(self, name: str, ext: Extent) -> int:
        """Rows of array ``name`` in a version of extent ``ext``."""
        spec = self.spec(name)
        if spec.kind == "level":
            return ext.length // self.block**spec.level
        if spec.kind == "seg":
            return ext.nseg
        return ext.nheap

    def shards(self, name: str, ext: Extent) -> int:
        """Complete shards of array ``name`` (shards are written only when complete)."""
        return self.rows(name, ext) // self.spec(name).shard_rows

    def bound(self, name: str, ext: Extent) -> int:
        """Rows of ``name`` that lie in complete shards; the rest are in the tail."""
        return self.shards(name, ext) * self.spec(name).shard_rows

    @lru_cache(maxsize=4096)  # noqa: B019 - Geometry is frozen and few exist
    def spec(self, name: str) -> ArraySpec:
        base, _, _gset = name.partition(".")
        if base == "tokens":
            return ArraySpec(name, "int32", 0, self.block, self.epoch, "level", 0)
        if base in ("seg_start", "seg_time", "seg_end"):
            return ArraySpec(name, "int64", 0, SEG_SHARD, SEG_SHARD, "seg")
        if base == "seg_heap":
            return ArraySpec(name, "uint8", 0, HEAP_CHUNK, HEAP_SHARD, "heap")
        kind, _, lv = base.rpartition("_")
        level = int(lv)
        rows = self.level_shard_rows(level)
        if kind == "gists":
            return ArraySpec(name, self.stored_dtype, self.dim, 1, rows, "level", level)
        dt = {"gistver": "uint16", "created": "int64", "flags": "uint8"}[kind]
        return ArraySpec(name, dt, 0, rows, rows, "level", level)


def gist_names(level: int, gset: str) -> tuple[str, str]:
    suffix = f".{gset}" if gset else ""
    return f"gists_{level}{suffix}", f"gistver_{level}{suffix}"


def array_names(length: int, block: int, gset: str) -> list[str]:
    """Physical arrays that exist at this length (levels appear as they get nodes)."""
    names = ["tokens", "seg_start", "seg_time", "seg_end", "seg_heap"]
    lv = 1
    while length // block**lv > 0:
        names += [*gist_names(lv, gset), f"created_{lv}", f"flags_{lv}"]
        lv += 1
    return sorted(names)


# ---------------------------------------------------------------------- shards
def encode_shard(spec: ArraySpec, rows: np.ndarray) -> bytes:
    """A complete zarr v3 shard: chunks (bytes + crc32c) then the index (+ crc32c) at the end."""
    assert rows.shape[0] == spec.shard_rows, (rows.shape, spec)
    data = np.ascontiguousarray(rows, dtype=np.dtype(spec.dtype).newbyteorder("<"))
    raw = memoryview(data.reshape(-1).view(np.uint8))
    step = spec.chunk_rows * spec.itemsize
    n = spec.chunks_per_shard
    parts = []
    index = np.empty((n, 2), dtype="<u8")
    off = 0
    for i in range(n):
        piece = raw[i * step : (i + 1) * step]
        parts.append(piece)
        parts.append(crc32c(piece).to_bytes(4, "little"))
        index[i] = (off, step + 4)
        off += step + 4
    ib = index.tobytes()
    parts.append(ib)
    parts.append(crc32c(ib).to_bytes(4, "little"))
    return b"".join(parts)


def decode_index(spec: ArraySpec, raw: bytes) -> np.ndarray:
    """Parse a shard index (offsets, lengths per chunk); ValueError if it does not verify."""
    if len(raw) != spec.index_nbytes:
        raise ValueError(f"shard index has {len(raw)} bytes, expected {spec.index_nbytes}")
    body, crc = raw[:-4], raw[-4:]
    if crc32c(body).to_bytes(4, "little") != crc:
        raise ValueError("shard index checksum mismatch")
    idx = np.frombuffer(body, dtype="<u8").reshape(spec.chunks_per_shard, 2)
    if np.any(idx[:, 0] == NO_OFFSET):
        raise ValueError("shard has a missing chunk")
    if np.any(idx[:, 1] != spec.chunk_nbytes):
        raise ValueError("shard chunk of unexpected size")
    if np.any(idx[:, 0] + idx[:, 1] > spec.shard_nbytes - spec.index_nbytes):
        raise ValueError("shard index points past the data")
    return idx


def decode_chunk(spec: ArraySpec, raw: bytes) -> np.ndarray:
    if len(raw) != spec.chunk_nbytes:
        raise ValueError(f"chunk has {len(raw)} bytes, expected {spec.chunk_nbytes}")
    body, crc = raw[:-4], raw[-4:]
    if crc32c(body).to_bytes(4, "little") != crc:
        raise ValueError("chunk checksum mismatch")
    return spec.from_bytes(body)


def zarr_metadata(spec: ArraySpec, attributes: dict) -> bytes:
    """The array's zarr.json (zarr v3, sharding_indexed with crc32c on chunks and index)."""
    shape = [HUGE_ROWS, spec.width] if spec.width else [HUGE_ROWS]
    shard = [spec.shard_rows, spec.width] if spec.width else [spec.shard_rows]
    chunk = [spec.chunk_rows, spec.width] if spec.width else [spec.chunk_rows]
    meta = {
        "shape": shape,
        "data_type": spec.dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": shard}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": chunk,
                    "codecs": [
                        {"name": "bytes", "configuration": {"endian": "little"}},
                        {"name": "crc32c"},
                    ],
                    "index_codecs": [
                        {"name": "bytes", "configuration": {"endian": "little"}},
                        {"name": "crc32c"},
                    ],
                    "index_location": "end",
                },
            }
        ],
        "attributes": attributes,
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }
    if spec.dtype == "uint8":
        meta["codecs"][0]["configuration"]["codecs"][0] = {"name": "bytes"}
    return json.dumps(meta, indent=2).encode()


def array_metadata(geo: Geometry, name: str) -> bytes:
    """The zarr.json of array ``name`` as this store writes it (what ``verify`` expects)."""
    spec = geo.spec(name)
    attrs = {"megacontext": {"array": name.partition(".")[0], "level": spec.level}}
    if name.startswith("gists_"):
        attrs["megacontext"]["logical_dtype"] = geo.dtype
    return zarr_metadata(spec, attrs)


def root_metadata(facts: dict) -> bytes:
    meta = {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {"megacontext": facts},
    }
    return json.dumps(meta, indent=2).encode()


# ---------------------------------------------------------------------- commit records
def encode_record(rec: dict) -> bytes:
    body = {k: v for k, v in rec.items() if k != "crc"}
    crc = crc32c(canonical_json(body))
    return canonical_json({**body, "crc": crc})


def decode_record(raw: bytes) -> dict:
    """Parse and verify a commit record; ValueError if it is not intact."""
    try:
        rec = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not valid JSON ({e})") from e
    if not isinstance(rec, dict) or "crc" not in rec:
        raise ValueError("no checksum")
    crc = rec.pop("crc")
    if crc32c(canonical_json(rec)) != crc:
        raise ValueError("checksum mismatch")
    return rec


def npz_members(raw: bytes) -> list[tuple[str, int]]:
    """(name, inflated bytes) of each member of an ``.npz``, from its zip directory alone
    (nothing is inflated); ValueError if it is not a zip file."""
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            return [(i.filename, i.file_size) for i in z.infolist()]
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"not an npz file ({e})") from None


def load_npz(raw: bytes, *, max_bytes: int) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (no pickles), refusing one that would inflate past
    ``max_bytes``: a small compressed file can claim gigabytes. Each member's array header
    must also fit the member's size: numpy allocates what a header claims before reading."""
    import io
    import zipfile

    total = sum(n for _, n in npz_members(raw))
    if total > max_bytes:
        raise ValueError(f"would inflate to {total} bytes, more than the {max_bytes} allowed")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            for info in z.infolist():
                with z.open(info) as f:
                    shape, dtype = _npy_header(f)
                if dtype.hasobject or int(np.prod(shape, dtype=object)) * dtype.itemsize > (
                    info.file_size
                ):
                    raise ValueError(f"member {info.filename} claims more than it holds")
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            return {n: z[n] for n in z.files}
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise ValueError(f"not an npz file ({e})") from None


def _npy_header(f) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"npy version {version} is not supported")
    return shape, dtype


def encode_blob(obj) -> bytes:
    """A small self-checking JSON object (tags, pins, bindings, object maps)."""
    return encode_record({"v": obj})


def decode_blob(raw: bytes):
    return decode_record(raw)["v"]


def log_key(version: int) -> str:
    return f"log/{version:020d}.json"
