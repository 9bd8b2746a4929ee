"""A gapkit model driven by i-PI over a UNIX socket with i-PI's own Python driver
(``i-pi-py_driver -m custom -P gapkit/ipi.py``): the first potential energy i-PI records
is the model's, and NVE dynamics conserves the energy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ipi", reason="i-PI is not installed (pip install ipi)")

from ase.io import write  # noqa: E402

from gapkit import GAPCalculator  # noqa: E402
from gapkit.ipi import GapkitDriver, driver_path  # noqa: E402

from conftest import make_si_model, si_frames  # noqa: E402


INPUT = """<simulation verbosity='low' safe_stride='1'>
  <output prefix='sim'>
    <properties stride='1' filename='out'> [ step, potential{{electronvolt}},
      conserved{{electronvolt}} ] </properties>
  </output>
  <total_steps> {steps} </total_steps>
  <prng><seed> 31415 </seed></prng>
  <ffsocket name='gapkit' mode='unix' pbc='true'>
    <address> {address} </address>
    <timeout> 120 </timeout>
  </ffsocket>
  <system>
    <initialize nbeads='1'>
      <file mode='ase'> init.xyz </file>
      <velocities mode='thermal' units='kelvin'> 300 </velocities>
    </initialize>
    <forces><force forcefield='gapkit'/></forces>
    <motion mode='dynamics'>
      <dynamics mode='nve'><timestep units='femtosecond'> 1.0 </timestep></dynamics>
    </motion>
    <ensemble><temperature units='kelvin'> 300 </temperature></ensemble>
  </system>
</simulation>
"""


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
    ipi_bin = shutil.which("i-pi", path=os.path.dirname(sys.executable))
    driver_bin = shutil.which("i-pi-py_driver", path=os.path.dirname(sys.executable))
    if ipi_bin is None or driver_bin is None:
        pytest.skip("the i-pi and i-pi-py_driver commands are not installed beside python")
    model, folder, init = si_model
    shutil.copy(folder / "init.xyz", tmp_path / "init.xyz")
    address = f"gapkit{os.getpid()}_{time.monotonic_ns() % 10**9}"
    steps = 20
    (tmp_path / "input.xml").write_text(INPUT.format(steps=steps, address=address))
    server = subprocess.Popen([ipi_bin, "input.xml"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        socket = Path(f"/tmp/ipi_{address}")
        for _ in range(600):  # i-PI creates the socket when it is ready
            if socket.exists() or server.poll() is not None:
                break
            time.sleep(0.1)
        assert socket.exists(), server.communicate(timeout=30)[0][-3000:]
        client = subprocess.run(
            [driver_bin, "-u", "-a", address, "-m", "custom", "-P", driver_path(),
             "-o", f"template={tmp_path / 'init.xyz'},model={folder / 'si.gapkit'}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert client.returncode == 0, (client.stdout + client.stderr)[-3000:]
        out, _ = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        Path(f"/tmp/ipi_{address}").unlink(missing_ok=True)  # a killed server leaves it
    assert server.returncode == 0, out[-3000:]
    rows = np.loadtxt(tmp_path / "sim.out", ndmin=2)
    assert rows.shape[0] == steps + 1
    ref = init.copy()
    ref.calc = GAPCalculator(model, variance=False)
    # i-PI's first potential is the model's energy of the initial structure
    assert rows[0, 1] == pytest.approx(ref.get_potential_energy(), abs=1e-6)
    # NVE with the model's forces: the conserved energy drifts far less than the
    # potential energy moves
    drift = np.ptp(rows[:, 2])
    assert np.ptp(rows[:, 1]) > 1e-3
    assert drift < 0.05 * np.ptp(rows[:, 1]), (drift, np.ptp(rows[:, 1]))


def test_cli_prints_the_driver_path(capsys):
    from gapkit.cli import main

    assert main(["ipi-driver"]) == 0
    assert capsys.readouterr().out.strip() == driver_path()
