"""A gapkit model driven by i-PI over a UNIX socket with i-PI's own Python driver
(``i-pi-py_driver -m custom -P gapkit/ipi.py``): the first potential energy i-PI records
is the model's, and NVE dynamics conserves the energy."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("ipi", reason="i-PI is not installed (pip install ipi)")

from ase.io import write  # noqa: E402

from gapkit import GAPCalculator  # noqa: E402
from gapkit.ipi import GapkitDriver, driver_path  # noqa: E402

from conftest import make_si_model, si_frames  # noqa: E402
from ipi_run import check_nve, run_nve  # noqa: E402


@pytest.fixture(scope="module")
def si_model(tmp_path_factory):
    frames = si_frames(8)
    model = make_si_model().fit(frames)
    folder = tmp_path_factory.mktemp("ipi")
    model.save(folder / "si.gapkit")
    init = frames[0].copy()
    init.calc = None
    write(folder / "init.xyz", init)
    return model, folder, init


def test_driver_reports_model_values(si_model):
    """The driver class alone (what i-PI calls): i-PI's units in, the model's out."""
    from ipi.utils.units import unit_to_internal

    model, folder, init = si_model
    drv = GapkitDriver(str(folder / "init.xyz"), str(folder / "si.gapkit"), variance="true")
    pos = unit_to_internal("length", "angstrom", init.positions)
    cell = unit_to_internal("length", "angstrom", np.array(init.cell).T)
    pot, force, vir, extras = drv(cell, pos)
    ref = init.copy()
    ref.calc = GAPCalculator(model)
    assert pot == pytest.approx(unit_to_internal("energy", "electronvolt",
                                                 ref.get_potential_energy()), rel=1e-10)
    np.testing.assert_allclose(force, unit_to_internal("force", "ev/ang", ref.get_forces()),
                               rtol=1e-9, atol=1e-12)
    assert '"forces_variance"' in extras and '"energy_variance"' in extras


def test_driver_bad_input(si_model, tmp_path):
    _, folder, init = si_model
    with pytest.raises(FileNotFoundError, match="model file"):
        GapkitDriver(str(folder / "init.xyz"), str(tmp_path / "none.gapkit"))
    other = init.copy()
    other.numbers[0] = 6
    write(tmp_path / "c.xyz", other)
    with pytest.raises(ValueError, match=r"atomic numbers \[6\]"):
        GapkitDriver(str(tmp_path / "c.xyz"), str(folder / "si.gapkit"))
    with pytest.raises(ValueError, match="variance='maybe'"):
        GapkitDriver(str(folder / "init.xyz"), str(folder / "si.gapkit"), variance="maybe")


@pytest.mark.slow
def test_ipi_nve_over_unix_socket(si_model, tmp_path):
    model, folder, init = si_model
    shutil.copy(folder / "init.xyz", tmp_path / "init.xyz")
    rows = run_nve(tmp_path, ["-m", "custom", "-P", driver_path(), "-o",
                              f"template={tmp_path / 'init.xyz'},model={folder / 'si.gapkit'}"],
                   steps=20)
    ref = init.copy()
    ref.calc = GAPCalculator(model, variance=False)
    check_nve(rows, ref.get_potential_energy())


def test_cli_prints_the_driver_path(capsys):
    from gapkit.cli import main

    assert main(["ipi-driver"]) == 0
    assert capsys.readouterr().out.strip() == driver_path()
