# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Run a gapkit model where MD runs: ASE, i-PI and LAMMPS
#
# A fitted GAP is only useful inside a simulation engine. gapkit gives three routes:
#
# * **ASE, in Python**: `atoms.calc = GAPCalculator(model)`; every variance (energy,
#   per-atom, forces) during MD.
# * **i-PI with gapkit's client**: `i-pi-py_driver -m custom -P "$(gapkit ipi-driver)"
#   -o template=init.xyz,model=m.gapkit`; the variances as i-PI extras (`variance=true`).
# * **The metatomic export**: `gapkit export m.gapkit m.pt`, then ASE's
#   `MetatomicCalculator`, i-PI's `-m metatomic` or LAMMPS' `pair_style metatomic`, with no
#   gapkit at run time; the energy σ per structure and per atom.
#
# The export writes a TorchScript model of the [metatomic](https://docs.metatensor.org/metatomic/)
# interface: SOAP (from gapkit's own radial spline and harmonics), two-body terms, the
# kernels against the fitted sparse points and the per-species e0, in float64. Forces and
# stress are the engine's automatic derivatives of that energy, so they are conservative by
# construction. This tutorial fits a small silicon GAP, exports it, checks that the export
# computes what gapkit computes, runs NVE with it in ASE and in i-PI, and writes the LAMMPS
# input that runs it (LAMMPS itself needs a build with the metatomic package).

# %%
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

from gapkit.plot import save, script_backend

matplotlib.use(script_backend())  # files as a script, inline figures in Jupyter
import matplotlib.pyplot as plt
import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.io import write
from ase.md.verlet import VelocityVerlet

import gapkit
from gapkit import GAP, SOAP, GAPCalculator, NoiseModel, SOAPKernel, Term

_HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
FAST = os.environ.get("GAPKIT_FAST") == "1"
OUT = Path(os.environ.get("GAPKIT_TUTORIAL_OUT", _HERE / "figures")) / "09_md_engines"
OUT.mkdir(parents=True, exist_ok=True)
if FAST:
    torch.set_num_threads(1)

# %% [markdown]
# ## A small silicon GAP
#
# Near-room-temperature frames of the Zuo data (AIMD at 300 K and strained crystals), a
# small SOAP, explicit noise: a model fitted in seconds. The export works the same for the
# default fit (`GAP()`: noise by cross-validation, calibrated σ).

# %%
frames = gapkit.data.load_bundled("Si_train.xyz")
pool = [a for a in frames if a.info["config_type"] in ("AIMD-NVT", "Elastic")
        and len(a) <= 64]
train = pool[:: 8 if FAST else 4]
soap = SOAP(cutoff=5.0, cutoff_width=1.0, n_max=6 if FAST else 8, l_max=4 if FAST else 6,
            atom_sigma=0.5)
model = GAP([Term(soap, SOAPKernel(zeta=4, delta=1.0), n_sparse=100 if FAST else 300)],
            noise=NoiseModel(energy=0.003, forces=0.05, virial=0.05), progress=False)
model.fit(train)
model.save(OUT / "si.gapkit", overwrite=True)
print(f"fitted on {len(train)} frames; {model.sparse_sets_[0].n} sparse points")

# %% [markdown]
# ## Export, and check it against gapkit
#
# `model.export(path)` (or `gapkit export si.gapkit si.pt` on the command line) writes the
# metatomic file. ASE's metatomic calculator loads it with no gapkit code involved; it asks
# for the per-atom `energy_uncertainty` on every call and warns when one passes
# `uncertainty_threshold` (0.1 eV by default). A GAP fitted on total energies does not
# observe single local energies, so their σ is larger than the σ of the total energy;
# pass a threshold that means something for the model, or `None`.

# %%
from metatomic.torch import ModelOutput  # noqa: E402
from metatomic_ase import MetatomicCalculator  # noqa: E402

path = model.export(OUT / "si.pt", overwrite=True)
exported = MetatomicCalculator(str(path), uncertainty_threshold=None)

atoms = frames[0].copy()
atoms.rattle(0.05, seed=3)
ref, mine = atoms.copy(), atoms.copy()
ref.calc, mine.calc = GAPCalculator(model), exported
diffs = {
    "energy (eV)": abs(mine.get_potential_energy() - ref.get_potential_energy()),
    "forces (eV/Å)": np.abs(mine.get_forces() - ref.get_forces()).max(),
    "stress (eV/Å³)": np.abs(mine.get_stress() - ref.get_stress()).max(),
    "per-atom energies (eV)": np.abs(mine.get_potential_energies()
                                     - ref.get_potential_energies()).max(),
}
out = exported.run_model(atoms, {"energy_uncertainty": ModelOutput(unit="eV",
                                                                   sample_kind="system")})
sigma_export = float(out["energy_uncertainty"].block().values[0, 0])
sigma_gapkit = float(np.sqrt(ref.calc.results["energy_variance"]))
diffs["energy sigma (eV)"] = abs(sigma_export - sigma_gapkit)
for name, value in diffs.items():
    print(f"max |export - gapkit| {name:<24} {value:.1e}")
print(f"energy sigma: {sigma_export:.5f} eV (gapkit {sigma_gapkit:.5f} eV)")

# %% [markdown]
# ## NVE in ASE with the exported model
#
# The 64-atom diamond cell given velocities for 600 K (it equilibrates near 300 K),
# velocity Verlet at 1 fs. The total energy is conserved because the
# forces are the exact gradient of the energy (here by TorchScript's autograd through the
# SOAP power spectrum), and the per-atom σ is available at every step. The first two calls
# are slower: TorchScript's profiling executor optimises the model while it runs them.

# %%
crystal = bulk("Si", "diamond", a=5.47, cubic=True) * (2, 2, 2)  # 64 atoms
md = crystal.copy()
md.calc = exported
# Maxwell-Boltzmann momenta at 600 K, p ~ N(0, m kT) per component, no net momentum
momenta = (np.random.default_rng(0).normal(size=(len(md), 3))
           * np.sqrt(md.get_masses()[:, None] * units.kB * 600))
md.set_momenta(momenta - momenta.mean(axis=0))
n_steps = 40 if FAST else 200
record = {"t": [], "epot": [], "etot": [], "sigma_max": []}


def observe():
    out = exported.run_model(md, {"energy_uncertainty": ModelOutput(unit="eV",
                                                                    sample_kind="atom")})
    record["t"].append(len(record["t"]))
    record["epot"].append(md.get_potential_energy() / len(md))
    record["etot"].append(md.get_total_energy() / len(md))
    record["sigma_max"].append(float(out["energy_uncertainty"].block().values.max()))


dyn = VelocityVerlet(md, timestep=1.0 * units.fs)
dyn.attach(observe, interval=1)
start = time.process_time()
dyn.run(n_steps)
per_step = (time.process_time() - start) / n_steps
epot, etot = np.array(record["epot"]), np.array(record["etot"])
print(f"NVE {n_steps} steps: potential energy range {1e3 * np.ptp(epot):.2f} meV/atom, "
      f"total energy range {1e3 * np.ptp(etot):.3f} meV/atom ({per_step * 1e3:.0f} CPU ms "
      "per step, the sigma query included)")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
ax1.plot(record["t"], 1e3 * (epot - etot[0]), label="potential")
ax1.plot(record["t"], 1e3 * (etot - etot[0]), label="total")
ax1.set_xlabel("step (1 fs)")
ax1.set_ylabel("energy − E$_{tot}$(0) (meV/atom)")
ax1.legend()
ax1.set_title("NVE with the exported model")
ax2.plot(record["t"], record["sigma_max"])
ax2.set_xlabel("step (1 fs)")
ax2.set_ylabel("largest per-atom σ (eV)")
ax2.set_title("local-energy σ along the run")
fig.tight_layout()
save(fig, OUT / "nve_exported.png")

# %% [markdown]
# ## i-PI
#
# i-PI is a server that integrates the equations of motion (path integrals, thermostats,
# replica exchange) and asks a *client* for energies and forces over a socket. Its own
# Python client runs metatomic models: the command is
#
# ```bash
# i-pi input.xml &
# i-pi-py_driver -u -a si -m metatomic -o template=init.xyz,model=si.pt
# ```
#
# (with gapkit's own client instead, `-m custom -P "$(gapkit ipi-driver)"` and
# `model=si.gapkit`). Below, a short NVT run with i-PI's Langevin thermostat, when i-PI is
# installed (`pip install ipi`).

# %%
IPI_INPUT = """<simulation verbosity='low'>
  <output prefix='md'>
    <properties stride='1' filename='out'>
      [ step, time{{femtosecond}}, temperature{{kelvin}}, potential{{electronvolt}} ]
    </properties>
  </output>
  <total_steps> {steps} </total_steps>
  <prng><seed> 12345 </seed></prng>
  <ffsocket name='gap' mode='unix' pbc='true'><address> {address} </address></ffsocket>
  <system>
    <initialize nbeads='1'>
      <file mode='ase'> init.xyz </file>
      <velocities mode='thermal' units='kelvin'> 600 </velocities>
    </initialize>
    <forces><force forcefield='gap'/></forces>
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'> 1.0 </timestep>
        <thermostat mode='langevin'><tau units='femtosecond'> 50 </tau></thermostat>
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'> 600 </temperature></ensemble>
  </system>
</simulation>
"""
bindir = os.path.dirname(sys.executable)
ipi, driver = (shutil.which(name, path=bindir) for name in ("i-pi", "i-pi-py_driver"))
ipi_rows = None
if ipi and driver:
    work = OUT / "ipi"
    work.mkdir(exist_ok=True)
    init = crystal.copy()
    write(work / "init.xyz", init)
    address = f"gapkit_tutorial_{os.getpid()}"
    steps = 20 if FAST else 100
    (work / "input.xml").write_text(IPI_INPUT.format(steps=steps, address=address))
    for old in work.glob("md.*"):
        old.unlink()
    server = subprocess.Popen([ipi, "input.xml"], cwd=work, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    socket = Path(f"/tmp/ipi_{address}")
    for _ in range(600):  # i-PI opens the socket when it is ready
        if socket.exists() or server.poll() is not None:
            break
        time.sleep(0.1)
    client = subprocess.run([driver, "-u", "-a", address, "-m", "metatomic", "-o",
                             f"template=init.xyz,model={path}"], cwd=work,
                            capture_output=True, text=True, timeout=600)
    server.wait(timeout=120)
    socket.unlink(missing_ok=True)
    assert client.returncode == 0, client.stderr[-2000:]
    ipi_rows = np.loadtxt(work / "md.out", ndmin=2)
    print(f"i-PI ran {len(ipi_rows) - 1} steps; mean T {ipi_rows[1:, 2].mean():.0f} K; "
          f"first potential {ipi_rows[0, 3]:.5f} eV (gapkit: "
          f"{GAPCalculator(model, variance=False).get_potential_energy(init):.5f} eV)")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(ipi_rows[:, 1], ipi_rows[:, 2])
    ax.set_xlabel("time (fs)")
    ax.set_ylabel("temperature (K)")
    ax.set_title("i-PI NVT (Langevin) with the exported model")
    fig.tight_layout()
    save(fig, OUT / "ipi_nvt.png")
else:
    print("i-PI is not installed here (pip install ipi): the i-PI run is skipped")

# %% [markdown]
# ## LAMMPS
#
# LAMMPS runs metatomic models through `pair_style metatomic`, with MPI domain
# decomposition: each rank passes its atoms and their ghosts, and the model returns the
# energy of the rank's own atoms (gapkit's export honours this `selected_atoms` request).
# It needs a LAMMPS built with the metatomic package (`conda install -c conda-forge
# lammps-metatomic`, or the build described in the metatomic documentation). The input:

# %%
LAMMPS_INPUT = f"""units metal
atom_style atomic
boundary p p p
read_data si.data
mass 1 28.0855
pair_style metatomic {path.name}
pair_coeff * * 14
velocity all create 600 12345
fix nve all nve
timestep 0.001
thermo 10
run 100
"""
write(OUT / "si.data", crystal, format="lammps-data", masses=True)
(OUT / "in.lammps").write_text(LAMMPS_INPUT)
lmp = shutil.which("lmp") or shutil.which("lmp_serial")
has_metatomic = False
if lmp:
    help_text = subprocess.run([lmp, "-h"], capture_output=True, text=True, timeout=60).stdout
    has_metatomic = "metatomic" in help_text
if has_metatomic:
    run = subprocess.run([lmp, "-in", "in.lammps"], cwd=OUT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-2000:]
    print(run.stdout[-1500:])
else:
    print("no LAMMPS with the metatomic package here: wrote", OUT / "in.lammps",
          "and si.data; run them with `lmp -in in.lammps` where it is installed")

# %% [markdown]
# ## What the checks say
#
# The export computes what gapkit computes to round-off; NVE with it conserves the energy;
# i-PI drives it unchanged.

# %%
assert max(diffs.values()) < 1e-8, diffs
assert np.ptp(etot) < 0.05 * np.ptp(epot), "NVE: the total energy should hardly move"
if ipi_rows is not None:
    assert abs(ipi_rows[0, 3] - GAPCalculator(model, variance=False)
               .get_potential_energy(init)) < 1e-6
print("all checks passed")
