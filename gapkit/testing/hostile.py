"""Hostile model files, generated from a good one: truncated, corrupted, foreign,
hand-edited (NaN arrays and e0, wrong dtypes, bad format versions, wrong metadata types),
zip bombs, duplicate and unknown members. Shared by the loader's tests and
``benchmarks/robustness.py``: :func:`damage_model_file` writes one, and
:data:`MODEL_FILE_DAMAGE` says what :meth:`gapkit.GAP.load` must answer.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MODEL_FILE_DAMAGE", "damage_model_file"]


def _rewrite(src: Path, dst: Path, edit: Callable[[str, bytes], bytes | str | None]) -> None:
    """Copy zip ``src`` to ``dst``, passing each (name, bytes) through ``edit`` (None drops)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = edit(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)


def _edit_meta(change: Callable[[dict], Any]) -> Callable[[str, bytes], bytes | str]:
    def edit(name: str, data: bytes) -> bytes | str:
        if name != "metadata.json":
            return data
        meta = json.loads(data)
        change(meta)
        return json.dumps(meta)
    return edit


def _data_offset(raw: bytes, info: zipfile.ZipInfo) -> int:
    """Where a member's (compressed) data starts: after its local file header."""
    h = info.header_offset
    name_len = int.from_bytes(raw[h + 26:h + 28], "little")
    extra_len = int.from_bytes(raw[h + 28:h + 30], "little")
    return h + 30 + name_len + extra_len


def damage_model_file(kind: str, src: str | Path, dst: str | Path) -> None:
    """Write to ``dst`` a copy of the model file ``src`` damaged as ``kind`` (a key of
    :data:`MODEL_FILE_DAMAGE`)."""
    src, dst = Path(src), Path(dst)
    raw = src.read_bytes()
    if kind == "truncated":
        dst.write_bytes(raw[: len(raw) // 2])
    elif kind == "truncated_tail":
        dst.write_bytes(raw[:-20])
    elif kind == "random_bytes":
        dst.write_bytes(np.random.default_rng(0).bytes(len(raw)))
    elif kind == "empty":
        dst.write_bytes(b"")
    elif kind == "bad_crc":
        # flip bits in the middle of the largest member's data: CRC-32 mismatch
        with zipfile.ZipFile(src) as zf:
            info = max(zf.infolist(), key=lambda i: i.compress_size)
        start = _data_offset(raw, info)
        bad = bytearray(raw)
        bad[start + info.compress_size // 2] ^= 0x01
        dst.write_bytes(bytes(bad))
    elif kind == "broken_deflate":
        # first byte of a deflate stream 0xFF: final block of reserved type 3
        with zipfile.ZipFile(src) as zf:
            info = zf.getinfo("alpha.npy")
        assert info.compress_type == zipfile.ZIP_DEFLATED
        start = _data_offset(raw, info)
        bad = bytearray(raw)
        bad[start] = 0xFF
        dst.write_bytes(bytes(bad))
    elif kind == "newer_version":
        _rewrite(src, dst, _edit_meta(lambda m: m.update(format_version=999)))
    elif kind == "not_gapkit_zip":
        with zipfile.ZipFile(dst, "w") as zf:
            zf.writestr("hello.txt", "not a model")
    elif kind == "foreign_metadata":
        with zipfile.ZipFile(dst, "w") as zf:
            zf.writestr("metadata.json", json.dumps({"format": "something.else"}))
    elif kind == "metadata_not_json":
        _rewrite(src, dst, lambda n, d: d[: len(d) // 2] if n == "metadata.json" else d)
    elif kind == "missing_array":
        _rewrite(src, dst, lambda n, d: None if n == "alpha.npy" else d)
    elif kind == "missing_metadata_key":
        _rewrite(src, dst, _edit_meta(lambda m: m.pop("terms")))
    elif kind == "zip_bomb":  # 0.3 MB on disk that would unpack to 256 MB of zeros
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
            for name in zin.namelist():
                if name != "alpha.npy":
                    zout.writestr(name, zin.read(name))
                    continue
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                with zout.open(info, "w", force_zip64=True) as out:
                    out.write(_npy_header((2**25,)))
                    for _ in range(16):
                        out.write(bytes(2**24))
    elif kind in ("nan_alpha", "int_alpha"):
        def edit(name: str, data: bytes) -> bytes:
            if name != "alpha.npy":
                return data
            arr = np.load(io.BytesIO(data))
            if kind == "nan_alpha":
                arr[3] = np.nan
            else:
                arr = arr.astype(np.int64)
            buf = io.BytesIO()
            np.save(buf, arr)
            return buf.getvalue()
        _rewrite(src, dst, edit)
    elif kind == "nan_e0":
        _rewrite(src, dst, _edit_meta(lambda m: m["e0"].update({"14": float("nan")})))
    elif kind.startswith("version_"):
        value = {"version_true": True, "version_zero": 0, "version_negative": -1,
                 "version_text": "1"}[kind]
        _rewrite(src, dst, _edit_meta(lambda m: m.update(format_version=value)))
    elif kind == "duplicate_member":
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
            for name in zin.namelist():
                zout.writestr(name, zin.read(name))
            with warnings.catch_warnings():  # zipfile warns "Duplicate name": meant here
                warnings.simplefilter("ignore", UserWarning)
                zout.writestr("alpha.npy", zin.read("alpha.npy"))
    elif kind == "unknown_member":
        _rewrite(src, dst, lambda n, d: d)
        with zipfile.ZipFile(dst, "a") as zf:
            zf.writestr("payload.py", "print('hello')")
    elif kind == "unknown_type":  # every sparse point of term 0 given a type no atom has
        def retype(name: str, data: bytes) -> bytes:
            if name != "term0_types.npy":
                return data
            arr = np.load(io.BytesIO(data))
            buf = io.BytesIO()
            np.save(buf, np.full_like(arr, 99))
            return buf.getvalue()
        _rewrite(src, dst, retype)
    elif kind == "species_not_numbers":
        _rewrite(src, dst, _edit_meta(lambda m: m.update(species=["Si"])))
    elif kind == "terms_not_a_list":
        _rewrite(src, dst, _edit_meta(lambda m: m.update(terms="soap")))
    elif kind == "noise_not_a_table":
        _rewrite(src, dst, _edit_meta(lambda m: m.update(noise=[1, 2])))
    else:
        raise ValueError(f"unknown damage {kind!r}; one of {sorted(MODEL_FILE_DAMAGE)}")


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """The .npy header of a float64 array of ``shape`` (the data follows)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


#: each kind of damage :func:`damage_model_file` makes -> what the ValueError of
#: :meth:`gapkit.GAP.load` says about it (a regular expression; None: only the file name)
MODEL_FILE_DAMAGE: dict[str, str | None] = {
    "truncated": "truncated or corrupted",
    "truncated_tail": "truncated or corrupted",
    "random_bytes": "truncated or corrupted",
    "empty": "truncated or corrupted",
    "bad_crc": "truncated or corrupted",
    "broken_deflate": None,
    "newer_version": r"format 999.*upgrade gapkit",
    "not_gapkit_zip": None,
    "foreign_metadata": "not a gapkit model file",
    "metadata_not_json": None,
    "missing_array": None,
    "missing_metadata_key": None,
    "zip_bomb": "alpha.npy would unpack to",
    "nan_alpha": "array alpha holds 1 NaN",
    "int_alpha": "array alpha has dtype int64",
    "nan_e0": "e0 of species .14. is not a finite number",
    "version_true": "format_version must be an integer",
    "version_zero": "format_version must be an integer",
    "version_negative": "format_version must be an integer",
    "version_text": "format_version must be an integer",
    "duplicate_member": r"duplicate members \['alpha.npy'\]",
    "unknown_member": r"unknown members \['payload.py'\]",
    "unknown_type": r"kernel types \[99\].*term0_types",
    "species_not_numbers": r"species must be atomic numbers",
    "terms_not_a_list": "not a readable gapkit model file",
    "noise_not_a_table": "not a readable gapkit model file",
}
