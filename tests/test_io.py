"""gapkit.io, the model file: save/load gives bit-identical predictions for every kind of
model (SOAP, two-body + SOAP, a two-species cluster; any delta), holds no pickles, refuses
to overwrite, and a damaged, truncated, hand-edited or newer file is refused with the reason."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.emt import EMT
from conftest import make_strained_cells
from model_cases import (
    SI_NOISE,
    _cuag_cluster,
    _far_frames,
    _si_cell,
    _si_terms,
    _soap,
    _tersoff_si,
)

from gapkit import (
    GAP,
    NoiseModel,
    SOAPKernel,
    Term,
)
from gapkit.testing import label


@pytest.fixture(scope="module")
def si_train() -> list[Atoms]:
    """8 cubic Si cells (8 atoms), ±2 % strain, rattled 0.1 Å, Tersoff E/F/virial."""
    return make_strained_cells(_si_cell(rattle=0.0), 8, rattle=0.1, strain=0.02,
                               calc=_tersoff_si, seed=0)


@pytest.fixture(scope="module")
def si_model(si_train) -> GAP:
    return GAP(_si_terms(), noise=SI_NOISE, progress=False).fit(si_train)


@pytest.fixture(scope="module")
def models(si_model, si_train):
    """A SOAP, a two-body + SOAP and a two-species cluster GAP (those of test_model.py)."""
    cluster = [label(_cuag_cluster(seed=k, rattle=0.15), EMT()) for k in range(8)]
    return {"si": si_model,
            "si+2b": GAP(_si_terms(two_body=True), noise=SI_NOISE, progress=False).fit(si_train),
            "cluster": GAP([Term(_soap(), SOAPKernel(zeta=4, delta=1.0), n_sparse=20)],
                           noise=NoiseModel(energy=0.002, forces=0.1),
                           progress=False).fit(cluster)}


def _all_outputs(model: GAP, frames) -> dict:
    out = {}
    for form in ("projected", "exact"):
        pred = model.predict(frames, forces_variance=form)
        for name in ("energy", "forces", "virial", "local_energy", "energy_variance",
                     "forces_variance", "virial_variance", "local_energy_variance"):
            out[f"{form}:{name}"] = getattr(pred, name)
    return out


@pytest.mark.parametrize("name", ["si", "si+2b", "cluster"])
def test_save_load_bit_identical(models, name, tmp_path):
    model = models[name]
    frames = [_cuag_cluster(seed=9)] if name == "cluster" else [_si_cell(), _far_frames()[0]]
    path = model.save(tmp_path / "model.gapkit")
    loaded = GAP.load(path)
    for attr in ("alpha_", "R_", "U_"):
        assert torch.equal(getattr(loaded, attr), getattr(model, attr)), attr
    for z0, z1 in zip(model.sparse_sets_, loaded.sparse_sets_):
        assert torch.equal(z0.points, z1.points)
        assert torch.equal(z0.types, z1.types)
    assert loaded.log_marginal_likelihood_ == model.log_marginal_likelihood_
    assert loaded.e0_ == model.e0_
    before, after = _all_outputs(model, frames), _all_outputs(loaded, frames)
    for key, value in before.items():
        if value is None:
            assert after[key] is None, key
        else:
            assert np.array_equal(value, after[key]), key


@pytest.mark.parametrize("delta", [1.0, 0.38, 0.67])
def test_save_load_bit_identical_for_any_delta(si_train, tmp_path, delta):
    """The kernel scale must survive the round trip exactly, whatever its value (deltas
    after optimize_hyperparameters are arbitrary floats)."""
    term = Term(_soap(), SOAPKernel(zeta=4, delta=delta), n_sparse=20)
    model = GAP([term], noise=SI_NOISE, progress=False).fit(si_train[:4])
    loaded = GAP.load(model.save(tmp_path / "model.gapkit"))
    d0 = float(model.terms_[0].kernel.delta.detach())
    d1 = float(loaded.terms_[0].kernel.delta.detach())
    assert d1 == d0, f"delta {d0!r} was loaded as {d1!r}"
    before, after = _all_outputs(model, [_si_cell()]), _all_outputs(loaded, [_si_cell()])
    for key, value in before.items():
        assert np.array_equal(value, after[key]), key


def test_saved_file_has_no_pickles(si_model, tmp_path):
    path = si_model.save(tmp_path / "model.gapkit")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert "metadata.json" in names
        meta = json.loads(zf.read("metadata.json"))
        assert meta["format_version"] >= 1
        arrays = [n for n in names if n.endswith(".npy")]
        assert arrays and set(names) == set(arrays) | {"metadata.json"}
        for n in arrays:
            value = np.load(io.BytesIO(zf.read(n)), allow_pickle=False)
            assert value.dtype != object, n


def test_save_refuses_to_overwrite(si_model, tmp_path):
    path = tmp_path / "model.gapkit"
    si_model.save(path)
    stamp = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        si_model.save(path)
    assert path.read_bytes() == stamp
    si_model.save(path, overwrite=True)
    GAP.load(path)


def _rewrite(src, dst, edit) -> None:
    """Copy zip ``src`` to ``dst``, passing each (name, bytes) through ``edit`` (None drops)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = edit(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)


def _edit_meta(change):
    def edit(name, data):
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


def _damage(kind, src, dst):
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
        def edit(name, data):
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
            with pytest.warns(UserWarning, match="Duplicate name"):
                zout.writestr("alpha.npy", zin.read("alpha.npy"))
    elif kind == "unknown_member":
        _rewrite(src, dst, lambda n, d: d)
        with zipfile.ZipFile(dst, "a") as zf:
            zf.writestr("payload.py", "print('hello')")
    elif kind == "terms_not_a_list":
        _rewrite(src, dst, _edit_meta(lambda m: m.update(terms="soap")))
    elif kind == "noise_not_a_table":
        _rewrite(src, dst, _edit_meta(lambda m: m.update(noise=[1, 2])))
    else:  # pragma: no cover
        raise AssertionError(kind)


def _npy_header(shape) -> bytes:
    """The .npy header of a float64 array of ``shape`` (the data follows)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


DAMAGE = {
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
    "terms_not_a_list": "not a readable gapkit model file",
    "noise_not_a_table": "not a readable gapkit model file",
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_load_rejects_damaged_file(si_model, tmp_path, kind):
    """Every damaged or foreign file raises ValueError naming the file (never a bare
    KeyError/zlib.error from deep inside, never a model)."""
    good = si_model.save(tmp_path / "good.gapkit")
    bad = tmp_path / f"{kind}.gapkit"
    _damage(kind, good, bad)
    with pytest.raises(ValueError, match=DAMAGE[kind]) as err:
        GAP.load(bad)
    assert str(bad) in str(err.value)


def test_load_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        GAP.load(tmp_path / "nowhere.gapkit")
