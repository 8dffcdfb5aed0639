"""Persistent preprocessed cache (``data.cache=disk``): each case decoded and resampled once, read back memory-mapped.

Layout under ``data.cache_dir``::

    <dataset name>-<settings hash>/           one folder per dataset root + geometry settings + library versions
        settings.json                         what the hash covers (for humans)
        <case>-<case hash>/                   one entry per case; the hash adds the source files' paths, sizes, mtimes
            image.npy  label.npy  meta.json   float32 image (C, *S), integer label (1, *S), shapes/dtypes/sizes/CRC32

An entry is written into a temporary folder and renamed into place, so a reader sees a whole entry or none; when two
processes (DDP ranks, parallel folds) build the same entry, the first rename wins and the other copy is dropped.
A changed source file gives another case hash (a new entry; the stale one is removed). On every read the entry's
``meta.json``, file sizes and ``.npy`` headers are checked, and the first read of an entry in a process also checks
the CRC32 of its files; a missing, truncated or corrupt entry is rebuilt from the source files, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch
from monai.data import Dataset, MetaTensor
from monai.transforms import Compose

from medseg.fileio import atomic_write_json, umask

log = logging.getLogger(__name__)

# Bump when the entry format or the meaning of the cached arrays changes: every cache is rebuilt once.
CACHE_VERSION = 1
ARRAY_KEYS = ("image", "label")
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 24 * 3600
_HINT = "free disk space, set data.cache_dir=PATH (or MEDSEG_CACHE) or use data.cache=memory"


class CacheError(RuntimeError):
    """A cache entry is missing, incomplete or corrupt (it is rebuilt)."""


def digest(obj: Any, n: int = 16) -> str:
    """Short sha256 hex of ``obj`` as JSON: the cache entries' names."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _versions() -> dict[str, str]:
    major_minor = lambda v: ".".join(v.split("+")[0].split(".")[:2])  # noqa: E731
    return {"monai": major_minor(monai.__version__), "torch": major_minor(torch.__version__)}


def file_fingerprint(path: str | Path) -> list[Any]:
    """``[absolute path, size, mtime_ns]`` of a source file: any change of the file changes the cache key."""
    p = Path(path).expanduser().absolute()
    st = p.stat()
    return [str(p), int(st.st_size), int(st.st_mtime_ns)]


def _item_files(item: dict[str, Any]) -> list[str]:
    files: list[str] = []
    for key in ARRAY_KEYS:
        value = item.get(key)
        files += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return files


def file_crc32(path: Path, chunk: int = 1 << 24) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


class DiskCache:
    """The cache folder of one dataset + geometry settings.

    Args:
        cache_dir: root of all preprocessed caches (``data.cache_dir``).
        dataset_root: the dataset's folder (part of the key, and the folder's readable name).
        settings: everything besides the files that determines the cached arrays (``geometry_settings``).
    """

    def __init__(self, cache_dir: str | Path, dataset_root: str | Path, settings: dict[str, Any]) -> None:
        root = Path(dataset_root).expanduser().absolute()
        self.settings = {
            "version": CACHE_VERSION,
            "dataset_root": str(root),
            "geometry": settings,
            "libraries": _versions(),
        }
        self.key = digest(self.settings)
        name = re.sub(r"[^A-Za-z0-9._-]", "_", root.name)[:60] or "dataset"
        self.folder = Path(cache_dir).expanduser().absolute() / f"{name}-{self.key}"

    # ------------------------------------------------------------------------------------------------- naming
    def entry(self, item: dict[str, Any]) -> Path:
        """The entry folder of one case: ``<case>-<hash of settings key + source file fingerprints>``."""
        files = [file_fingerprint(f) for f in _item_files(item)]
        case = str(item.get("case") or Path(_item_files(item)[0]).name)
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", case)[:80].lstrip(".") or "case"  # no hidden names (temporaries)
        if safe != case:  # keep case ids that only differ in replaced characters apart (stale-entry removal)
            safe = f"{safe}~{digest(case, 8)}"
        return self.folder / f"{safe}-{digest([self.key, files])}"

    # ------------------------------------------------------------------------------------------------- reading
    def check(self, entry: Path, deep: bool = False) -> dict[str, Any]:
        """The entry's meta after checking sizes and ``.npy`` headers (and CRC32 with ``deep``); raises CacheError."""
        return self._open(entry, deep, copy=False)[0]

    def read(self, entry: Path, verify: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``({"image": float32 (C, *S), "label": float32 (1, *S), **extra}, affine)`` from the memory-mapped files.

        Checked as by :meth:`check` (``verify``: with CRC32). Only this one volume is held in RAM: the arrays are
        copied out of the mapping, whose file pages stay in the OS page cache, shared by all loader workers.
        """
        meta, arrays = self._open(entry, verify, copy=True)
        for name, m in meta.get("extra", {}).items():
            arrays[name] = np.asarray(m["value"], dtype=m["dtype"])
        return arrays, np.asarray(meta["affine"], dtype=np.float64)

    def _open(self, entry: Path, deep: bool, copy: bool) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {}
        try:
            meta = json.loads((entry / "meta.json").read_text())
            if meta.get("version") != CACHE_VERSION or set(meta.get("arrays", {})) != set(ARRAY_KEYS):
                raise CacheError(f"{entry}: other cache version or keys")
            for name, m in meta["arrays"].items():
                path = entry / f"{name}.npy"
                if (size := path.stat().st_size) != m["bytes"]:
                    raise CacheError(f"{path}: {size} bytes, expected {m['bytes']} (truncated?)")
                mm = np.load(path, mmap_mode="r")
                if list(mm.shape) != m["shape"] or str(mm.dtype) != m["dtype"]:
                    raise CacheError(f"{path}: header {mm.shape} {mm.dtype} != meta {m['shape']} {m['dtype']}")
                if deep and file_crc32(path) != m["crc32"]:
                    raise CacheError(f"{path}: CRC32 mismatch (corrupt file)")
                if copy:
                    arrays[name] = np.array(mm, dtype=np.float32)  # a private, writable copy of this volume only
                del mm
        except CacheError:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError) as err:
            raise CacheError(f"{entry}: unreadable cache entry ({type(err).__name__}: {err})") from err
        return meta, arrays

    # ------------------------------------------------------------------------------------------------- writing
    def write(
        self,
        entry: Path,
        image: np.ndarray,
        label: np.ndarray,
        affine: np.ndarray,
        case: str,
        extra: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Write one entry atomically (temporary folder + rename); the first complete entry of a case wins.

        ``extra``: small arrays the preprocessing adds to the item (the foreground crop box), kept in ``meta.json``.
        """
        self._write_settings()
        label = _compact_label(label)
        tmp = Path(tempfile.mkdtemp(dir=self.folder, prefix=f"{_TMP_PREFIX}{entry.name}-"))
        try:
            arrays: dict[str, Any] = {}
            for name, arr in (("image", np.ascontiguousarray(image, dtype=np.float32)), ("label", label)):
                path = tmp / f"{name}.npy"
                np.save(path, arr)  # no fsync: after a crash, sizes and CRC32 expose a damaged entry (then rebuilt)
                arrays[name] = {
                    "shape": list(arr.shape),
                    "dtype": str(arr.dtype),
                    "bytes": path.stat().st_size,
                    "crc32": file_crc32(path),
                }
            meta = {
                "version": CACHE_VERSION,
                "case": case,
                "arrays": arrays,
                "affine": np.asarray(affine).tolist(),
                "extra": {
                    k: {"value": np.asarray(v).tolist(), "dtype": str(np.asarray(v).dtype)}
                    for k, v in (extra or {}).items()
                },
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700; the cache may be shared like any other folder
            self._install(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._remove_stale(entry)

    def _install(self, tmp: Path, entry: Path) -> None:
        error: OSError | None = None
        for _ in range(3):
            try:
                os.replace(tmp, entry)  # atomic; fails when another process installed a (non-empty) entry first
                return
            except OSError as err:
                error = err
                try:
                    self.check(entry, deep=True)
                    return  # another writer won with a complete entry: keep it, drop ours
                except CacheError:
                    trash = self.folder / f"{_TMP_PREFIX}trash-{uuid.uuid4().hex}"
                    with contextlib.suppress(OSError):
                        os.replace(entry, trash)  # move the corrupt entry aside atomically, then delete it
                    shutil.rmtree(trash, ignore_errors=True)
        raise OSError(f"{entry}: could not install the cache entry ({error})")

    def _write_settings(self) -> None:
        path = self.folder / "settings.json"
        if path.is_file():
            return
        atomic_write_json(path, self.settings)

    def _remove_stale(self, entry: Path) -> None:
        """Entries of the same case built from older versions of its files, and temporaries left by killed runs."""
        prefix = entry.name.rsplit("-", 1)[0]
        now = time.time()
        for other in self.folder.iterdir():
            name = other.name
            try:
                if name.startswith(_TMP_PREFIX):
                    if now - other.stat().st_mtime > _STALE_TMP_SECONDS:
                        _remove(other)
                elif other != entry and other.is_dir() and name.rsplit("-", 1)[0] == prefix:
                    _remove(other)
            except OSError:
                continue  # a concurrent process removed it first

    # ------------------------------------------------------------------------------------------------- building
    def ensure(
        self, items: Sequence[dict[str, Any]], build: Callable[[dict[str, Any]], dict[str, Any]], threads: int = 1
    ) -> dict[str, int]:
        """Build every missing or broken entry of ``items``; returns ``{"reused": n, "built": m}``."""
        todo = []
        for item in items:
            try:
                self.check(self.entry(item))
            except CacheError:
                todo.append(item)
        if todo:
            start = time.perf_counter()
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise OSError(f"data.cache=disk: cannot create {self.folder} ({err}); {_HINT}") from err
            with ThreadPool(max(1, threads)) as pool:
                pool.map(lambda it: self.build_entry(it, build), todo)
            log.info(
                "data.cache=disk: preprocessed %d case(s) into %s in %.1f s",
                len(todo),
                self.folder,
                time.perf_counter() - start,
            )
        return {"reused": len(items) - len(todo), "built": len(todo)}

    def build_entry(self, item: dict[str, Any], build: Callable[[dict[str, Any]], dict[str, Any]]) -> Path:
        """Run the deterministic preprocessing ``build`` on ``item`` and store the result."""
        entry = self.entry(item)
        out = build(dict(item))
        affine = getattr(out["image"], "affine", None)
        affine = np.eye(4) if affine is None else np.asarray(affine.cpu() if hasattr(affine, "cpu") else affine)
        extra = {k: np.asarray(v) for k, v in out.items() if k not in item and isinstance(v, (np.ndarray, np.generic))}
        try:
            self.write(entry, _numpy(out["image"]), _numpy(out["label"]), affine, str(item.get("case", "")), extra)
        except OSError as err:
            raise OSError(f"data.cache=disk: cannot write the cache entry {entry} ({err}); {_HINT}") from err
        return entry


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _compact_label(label: np.ndarray) -> np.ndarray:
    """Integer labels (nearest-neighbour resampled) as uint8/uint16; anything else stays float32 (exact either way)."""
    label = np.asarray(label)
    if label.size and np.all(np.isfinite(label)) and np.array_equal(label, np.round(label)):
        lo, hi = float(label.min()), float(label.max())
        if lo >= 0 and hi <= np.iinfo(np.uint16).max:
            return np.ascontiguousarray(label, dtype=np.uint8 if hi <= 255 else np.uint16)
    return np.ascontiguousarray(label, dtype=np.float32)


def _remove(path: Path) -> None:
    if path.is_dir():
        trash = path.parent / f"{_TMP_PREFIX}trash-{uuid.uuid4().hex}"
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class DiskCacheDataset(Dataset):
    """A MONAI dataset whose first ``n_cached`` transforms are replaced by the disk cache.

    ``transform`` is the whole pipeline (as for ``CacheDataset``): its first ``n_cached`` transforms are the
    deterministic geometry (run once per case, by :meth:`DiskCache.ensure` or here when an entry is missing or
    corrupt), the rest runs on every access on the arrays read back from the cache. Random states are seeded through
    ``transform`` exactly as for MONAI's datasets, so the samples equal those of ``CacheDataset`` with the same seed.
    """

    def __init__(self, data: Sequence[dict[str, Any]], transform: Compose, cache: DiskCache, n_cached: int) -> None:
        super().__init__(data, transform)
        self.cache, self.n_cached = cache, n_cached
        self._verified: set[int] = set()  # entries whose CRC32 was checked in this process

    def build(self, item: dict[str, Any]) -> dict[str, Any]:
        """The cached (deterministic) part of the pipeline on one item."""
        assert isinstance(self.transform, Compose)
        return self.transform(item, end=self.n_cached)

    def _transform(self, index: int) -> Any:
        item = self.data[index]
        entry = self.cache.entry(item)
        try:
            arrays, affine = self.cache.read(entry, verify=index not in self._verified)
        except CacheError as err:
            log.warning("data.cache=disk: rebuilding %s (%s)", entry.name, err)
            self.cache.build_entry(item, self.build)
            arrays, affine = self.cache.read(entry, verify=True)
        self._verified.add(index)
        aff = torch.as_tensor(affine)
        data = {k: v for k, v in item.items() if k not in ARRAY_KEYS}
        data.update({k: MetaTensor(torch.from_numpy(arrays.pop(k)), affine=aff.clone()) for k in ARRAY_KEYS})
        data.update(arrays)  # the foreground crop box, as CropForegroundd leaves it in the item
        assert isinstance(self.transform, Compose)
        return self.transform(data, start=self.n_cached)
