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
from gapkit.testing.hostile import MODEL_FILE_DAMAGE, damage_model_file


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
    """A SOAP, a two-body + SOAP and a two-species cluster GAP (those of test_model.py),
    and the cluster with compressed element channels (SOAP ``species_mixing``)."""
    cluster = [label(_cuag_cluster(seed=k, rattle=0.15), EMT()) for k in range(8)]
    return {"si": si_model,
            "si+2b": GAP(_si_terms(two_body=True), noise=SI_NOISE, progress=False).fit(si_train),
            "cluster": GAP([Term(_soap(), SOAPKernel(zeta=4, delta=1.0), n_sparse=20)],
                           noise=NoiseModel(energy=0.002, forces=0.1),
                           progress=False).fit(cluster),
            # compressed element channels: a given mixing and a fixed embedding
            "mixed": GAP([Term(_soap(species_mixing={"Cu": [0.9, 0.2], "Ag": [-0.3, 1.1]}),
                               SOAPKernel(zeta=4), n_sparse=20),
                          Term(_soap(species_mixing=1), SOAPKernel(zeta=2), n_sparse=10)],
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


@pytest.mark.parametrize("name", ["si", "si+2b", "cluster", "mixed"])
def test_save_load_bit_identical(models, name, tmp_path):
    model = models[name]
    frames = ([_cuag_cluster(seed=9)] if name in ("cluster", "mixed")
              else [_si_cell(), _far_frames()[0]])
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
    # a missing folder is named before anything is written (not the temporary file's name)
    with pytest.raises(FileNotFoundError, match=r"folder of the model file .* does not exist"):
        si_model.save(tmp_path / "no" / "such" / "m.gapkit")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        si_model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gapkit"]


@pytest.mark.parametrize("kind", sorted(MODEL_FILE_DAMAGE))
def test_load_rejects_damaged_file(si_model, tmp_path, kind):
    """Every damaged or foreign file raises ValueError naming the file (never a bare
    KeyError/zlib.error from deep inside, never a model)."""
    good = si_model.save(tmp_path / "good.gapkit")
    bad = tmp_path / f"{kind}.gapkit"
    damage_model_file(kind, good, bad)
    with pytest.raises(ValueError, match=MODEL_FILE_DAMAGE[kind]) as err:
        GAP.load(bad)
    assert str(bad) in str(err.value)


def test_load_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        GAP.load(tmp_path / "nowhere.gapkit")
