"""A gapkit model as an i-PI client: i-PI's own Python driver runs it, no glue code.

i-PI (``pip install ipi``) runs the dynamics (path integrals, thermostats, replica exchange)
and asks a client for energies, forces and the virial over a socket. Its driver
``i-pi-py_driver`` loads a client from a Python file (``-m custom -P FILE``); this module is
that file, built on i-PI's stock ASE client (``ipi.pes._ase.ASEDriver``) with a
:class:`gapkit.GAPCalculator`::

    i-pi input.xml &
    i-pi-py_driver -u -a gapkit -m custom -P "$(gapkit ipi-driver)" \\
        -o template=init.xyz,model=si.gapkit

``input.xml`` names the same socket (``<ffsocket mode="unix"><address>gapkit</address>``);
``template`` is any file ASE reads with the atoms in i-PI's order (their species; the
positions and cell come from i-PI); ``model`` is the gapkit model file. Options (``-o``,
comma-separated ``key=value``): ``variance`` (default ``false``: MD does not need the
force variance, which costs several times the forces; ``true`` sends ``energy_variance``
and ``forces_variance`` to i-PI as extras, in eV^2 and eV^2/Å^2), ``threads`` (torch threads;
default: what gapkit chooses for the machine).

``gapkit ipi-driver`` prints the path of this file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

try:  # i-PI is optional: this module is only imported by i-PI's driver (or the tests)
    from ipi.pes._ase import ASEDriver
except ImportError as err:  # pragma: no cover - exercised without ipi installed
    raise ImportError("gapkit.ipi is an i-PI client; install i-PI with `pip install ipi`"
                      ) from err

__all__ = ["GapkitDriver", "driver_path"]

__DRIVER_NAME__ = "gapkit"
__DRIVER_CLASS__ = "GapkitDriver"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def driver_path() -> str:
    """The path of this file (what ``i-pi-py_driver -m custom -P`` takes)."""
    return str(Path(__file__).resolve())


def _flag(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"gapkit i-PI driver: {name}={value!r}; use true or false")


class GapkitDriver(ASEDriver):
    """i-PI's ASE client with a gapkit model (see the module docstring).

    Parameters
    ----------
    template : str
        A file ASE reads: the atoms, in i-PI's order.
    model : str
        A gapkit model file (``GAP.save``, ``gapkit fit``).
    variance : bool or str
        Send ``energy_variance`` and ``forces_variance`` to i-PI as extras.
    threads : int or str, optional
        torch threads for this client.
    """

    def __init__(self, template, model, variance=False, threads=None, *args, **kwargs):
        self.model_path = str(model)
        self.variance = _flag(variance, "variance")
        self.threads = None if threads in (None, "") else int(threads)
        super().__init__(template, *args, **kwargs)

    def check_parameters(self):
        """Read the template and load the model; clear errors for missing files and for a
        template whose species the model was not fitted on."""
        # absolute imports: i-PI loads this module from its file, outside the package
        from gapkit import GAP, GAPCalculator
        from gapkit._threads import set_threads

        for what, path in (("template", self.template), ("model", self.model_path)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"gapkit i-PI driver: {what} file {path!r} not found")
        super().check_parameters()
        set_threads(self.threads)
        model = GAP.load(self.model_path)
        missing = sorted(set(self.template_ase.numbers.tolist()) - set(model.species_))
        if missing:
            raise ValueError(f"gapkit i-PI driver: the template {self.template!r} has atomic "
                             f"numbers {missing} that the model {self.model_path!r} was not "
                             f"fitted on (it knows {sorted(model.species_)})")
        self.ase_calculator = GAPCalculator(model, variance=self.variance)

    def compute_structure(self, cell: np.ndarray, pos: np.ndarray):
        pot, force, vir, extras = super().compute_structure(cell, pos)
        if self.variance:  # the calibrated variances of this structure (eV^2, eV^2/Å^2)
            res = self.ase_calculator.results
            extras = json.dumps({"energy_variance": float(res["energy_variance"]),
                                 "forces_variance": np.asarray(res["forces_variance"]
                                                               ).tolist()})
        return pot, force, vir, extras
