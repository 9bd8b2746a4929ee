"""Run i-PI (NVE, 300 K, 1 fs) over a UNIX socket with a given client command line; shared by
tests/test_ipi.py (gapkit's own client) and tests/test_export.py (i-PI's metatomic driver)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

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


def run_nve(workdir: Path, client_args: list[str], steps: int) -> np.ndarray:
    """i-PI on ``workdir/init.xyz`` for ``steps`` steps with ``i-pi-py_driver -u -a ADDRESS
    *client_args`` as its client; returns the rows (step, potential, conserved; eV) of its
    properties file. Skips when the i-PI commands are not installed beside python."""
    ipi_bin = shutil.which("i-pi", path=os.path.dirname(sys.executable))
    driver_bin = shutil.which("i-pi-py_driver", path=os.path.dirname(sys.executable))
    if ipi_bin is None or driver_bin is None:
        pytest.skip("the i-pi and i-pi-py_driver commands are not installed beside python")
    address = f"gapkit{os.getpid()}_{time.monotonic_ns() % 10**9}"
    (workdir / "input.xml").write_text(INPUT.format(steps=steps, address=address))
    server = subprocess.Popen([ipi_bin, "input.xml"], cwd=workdir,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        socket = Path(f"/tmp/ipi_{address}")
        for _ in range(600):  # i-PI creates the socket when it is ready
            if socket.exists() or server.poll() is not None:
                break
            time.sleep(0.1)
        assert socket.exists(), server.communicate(timeout=30)[0][-3000:]
        client = subprocess.run([driver_bin, "-u", "-a", address, *client_args], cwd=workdir,
                                capture_output=True, text=True, timeout=300)
        assert client.returncode == 0, (client.stdout + client.stderr)[-3000:]
        out, _ = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        Path(f"/tmp/ipi_{address}").unlink(missing_ok=True)  # a killed server leaves it
    assert server.returncode == 0, out[-3000:]
    rows = np.loadtxt(workdir / "sim.out", ndmin=2)
    assert rows.shape[0] == steps + 1
    return rows


def check_nve(rows: np.ndarray, first_energy: float) -> None:
    """i-PI's first potential is ``first_energy`` (the model's, eV), and NVE with the model's
    forces conserves the energy: its drift is far smaller than the potential's range."""
    assert rows[0, 1] == pytest.approx(first_energy, abs=1e-6)
    drift = np.ptp(rows[:, 2])
    assert np.ptp(rows[:, 1]) > 1e-3
    assert drift < 0.05 * np.ptp(rows[:, 1]), (drift, np.ptp(rows[:, 1]))
