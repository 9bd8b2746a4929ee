"""Export a fitted GAP as a metatomic model, to run in LAMMPS (``pair_style metatomic``),
i-PI and ASE with no gapkit at run time.

``gapkit export model.gapkit model.pt`` (or :func:`export`) writes a TorchScript file that
metatomic's engines load. It computes, in float64, what :meth:`gapkit.GAP.predict` computes:

* ``energy`` per structure and per atom (the local energies with e0), and through the
  engine's autograd the forces and stress;
* ``energy_uncertainty``: per structure, the sigma of the total energy -- the calibrated
  predictive variance when the model has one (the default fit), else the latent DTC
  variance; per atom, the latent sigma of each local energy (the atoms' array
  ``gap_local_energy_variance`` of :class:`gapkit.GAPCalculator`, square-rooted). ASE's
  metatomic calculator warns when a per-atom sigma passes its ``uncertainty_threshold``.

What can be exported: SOAP and symmetry-function terms (:class:`~gapkit.SOAP`,
:class:`~gapkit.SymmetryFunctions`) with :class:`~gapkit.SOAPKernel` or
:class:`~gapkit.SEKernel`, two-body terms (:class:`~gapkit.TwoBody` with
:class:`~gapkit.TwoBodyKernel`), the per-species e0 and the pair-law baselines
(:class:`~gapkit.baselines.CoreRepulsion`, :class:`~gapkit.baselines.LennardJones`).
Refused with an :class:`ExportError` naming it: an NTK kernel, and the long-ranged
:class:`~gapkit.baselines.Coulomb` and :class:`~gapkit.baselines.Ewald` baselines (a
metatomic engine gives a model short-range neighbour lists only). Needs the
``metatomic`` extra (``pip install "gapkit[metatomic]"``: metatomic-torch and, for ASE,
metatomic-ase).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._files import atomic_path, check_output_path

__all__ = ["ExportError", "METATOMIC_VERSIONS", "export", "exported_module"]

#: the metatomic-torch versions an export is tested with (lowest inclusive, highest
#: exclusive): a model file records the version that wrote it, and engines built against
#: another minor version may refuse it
METATOMIC_VERSIONS = ((0, 1, 19), (0, 2, 0))


class ExportError(ValueError):
    """The model (or the environment) cannot give a metatomic export; the message says
    which term or baseline and what to do."""


def _metatomic():
    try:
        import metatomic.torch as mta
    except ImportError as err:
        raise ExportError(
            "exporting to metatomic needs metatomic-torch: pip install \"gapkit[metatomic]\" "
            f"(import failed: {err})") from None
    version = tuple(int(p) for p in mta.__version__.split("+")[0].split(".")[:3])
    lo, hi = METATOMIC_VERSIONS
    if not lo <= version < hi:
        raise ExportError(
            f"metatomic-torch {mta.__version__} is installed; gapkit exports are tested with "
            f"{'.'.join(map(str, lo))} <= version < {'.'.join(map(str, hi))}: "
            "pip install \"gapkit[metatomic]\" installs a tested one")
    return mta


def _kernel_module(kernel):
    """The TorchScript twin of a descriptor kernel, or None when there is none."""
    from ._metatomic_modules import DotKernel, SquaredExponentialKernel
    from .kernels import SEKernel, SOAPKernel

    variance = float(kernel.variance.detach())
    if type(kernel) is SOAPKernel:
        return DotKernel(zeta=int(kernel.zeta), variance=variance)
    if type(kernel) is SEKernel:
        inv = 1.0 / kernel.lengthscale.detach().reshape(()).to(torch.float64)
        if kernel.scales is not None:
            inv = inv / kernel.scales.detach().to(torch.float64)
        return SquaredExponentialKernel(inverse_scale=inv.reshape(-1).clone(),
                                        variance=variance)
    return None


def _sparse_buffers(sparse, alpha) -> dict:
    return dict(points=sparse.points.to(torch.float64).clone(),
                types=sparse.types.to(torch.long).clone(), alpha=alpha.clone())


def _soap_module(term, sparse, alpha, kern):
    from ._metatomic_modules import SOAPTerm

    desc = term.descriptor
    return SOAPTerm(
        **desc.torchscript_tables(), n_max=desc.n_max, l_max=desc.l_max, cutoff=desc.cutoff,
        width=desc.cutoff_width, species=[int(z) for z in desc.species],
        normalize=desc.normalize, kern=kern, **_sparse_buffers(sparse, alpha))


def _symmetry_module(term, sparse, alpha, kern):
    from ._metatomic_modules import SymmetryTerm
    from .descriptors.symmetry import CUTOFF_FUNCTIONS

    desc = term.descriptor
    angular = [[*row, 1.0] for row in desc.g4] + [[*row, 0.0] for row in desc.g5]
    return SymmetryTerm(
        cutoff=desc.cutoff, cutoff_kind=CUTOFF_FUNCTIONS.index(desc.cutoff_function),
        species=[int(z) for z in desc.species],
        g2=torch.tensor(desc.g2, dtype=torch.float64).reshape(-1, 2),
        angular=torch.tensor(angular, dtype=torch.float64).reshape(-1, 4), kern=kern,
        **_sparse_buffers(sparse, alpha))


def _two_body_module(term, sparse, alpha):
    from ._metatomic_modules import TwoBodyTerm

    desc, kernel = term.descriptor, term.kernel  # a Term binds them to one cutoff
    return TwoBodyTerm(
        cutoff=desc.cutoff, width=desc.cutoff_width, species=[int(z) for z in desc.species],
        lengthscale=float(kernel.lengthscale.detach().reshape(())),
        variance=float(kernel.variance.detach()), **_sparse_buffers(sparse, alpha))


def _baseline_module(baseline, species: list[int]):
    """A pair-law baseline as a :class:`~gapkit._metatomic_modules.PairBaseline` over the
    model's species, or an :class:`ExportError` naming what cannot be exported."""
    from ._metatomic_modules import PairBaseline
    from .baselines import CoreRepulsion, LennardJones
    from .baselines.repulsion import _ZBL_C, _ZBL_D

    size = max(species) + 1
    z = np.array(species)
    tables = {k: np.zeros((size, size)) for k in ("cutoff", "r_on", "p1", "p2", "shift")}
    where = np.ix_(z, z)
    kind = 0
    if type(baseline) is LennardJones:
        tables["cutoff"][where] = baseline.cutoff
        tables["r_on"][where] = baseline.cutoff  # no switch
        tables["p1"][where], tables["p2"][where] = baseline.A, baseline.B
        if baseline.shift:
            tables["shift"][where] = float(baseline.pair_energy(baseline.cutoff))
    elif type(baseline) is CoreRepulsion:
        rc, r_on, law = baseline.pair_tables(z)
        tables["cutoff"][where], tables["r_on"][where] = rc, r_on
        tables["p1"][where] = law[0]
        if baseline.kind == "zbl":
            kind = 1
            tables["p2"][where] = law[1]
    else:
        raise ExportError(
            f"the {type(baseline).__name__} baseline cannot be exported to metatomic: it is "
            "long-ranged (no cutoff), and metatomic engines give a model short-range "
            "neighbour lists only (LAMMPS splits the cell between ranks). Exportable "
            "baselines: LennardJones and CoreRepulsion. Fit without it to export, or run "
            "the model through gapkit.GAPCalculator (ASE) or gapkit.ipi (i-PI)")
    return PairBaseline(kind=kind, zbl_c=[float(c) for c in _ZBL_C],
                        zbl_d=[float(d) for d in _ZBL_D],
                        **{k: torch.from_numpy(v) for k, v in tables.items()})


def _term_modules(model) -> list:
    from .descriptors import SOAP, SymmetryFunctions, TwoBody
    from .kernels import TwoBodyKernel

    alphas = torch.split(model.alpha_.detach().to(torch.float64),
                         [s.n for s in model.sparse_sets_])
    modules = []
    for i, (term, sparse, alpha) in enumerate(zip(model.terms_, model.sparse_sets_, alphas)):
        desc, kernel = term.descriptor, term.kernel
        kern = _kernel_module(kernel)
        if type(desc) is SOAP and kern is not None:
            modules.append(_soap_module(term, sparse, alpha, kern))
        elif type(desc) is SymmetryFunctions and kern is not None:
            modules.append(_symmetry_module(term, sparse, alpha, kern))
        elif type(desc) is TwoBody and type(kernel) is TwoBodyKernel:
            modules.append(_two_body_module(term, sparse, alpha))
        else:
            raise ExportError(
                f"term {i} ({type(desc).__name__} descriptor with {type(kernel).__name__}) "
                "cannot be exported to metatomic yet: exportable terms are SOAP or "
                "SymmetryFunctions with SOAPKernel or SEKernel, and TwoBody with "
                "TwoBodyKernel. Run this model through gapkit.GAPCalculator (ASE) or "
                "gapkit.ipi (i-PI) instead")
    return modules


def exported_module(model) -> Any:
    """The metatomic ``AtomisticModel`` of a fitted :class:`~gapkit.GAP` (not yet saved;
    :func:`export` writes it). Raises :class:`ExportError` for what cannot be exported."""
    from ._metatomic_modules import GAPModel

    mta = _metatomic()
    model.check_fitted()
    terms = _term_modules(model)
    species = [int(z) for z in model.species_]
    baselines = [_baseline_module(b, species) for b in model.baselines]
    e0 = torch.zeros(max(species) + 1, dtype=torch.float64)
    for z, value in model.e0_.items():
        e0[int(z)] = float(value)
    spec = (getattr(model, "predictive_", None) or {}).get("energy")
    predictive = [] if not spec else [float(spec[k]) for k in ("a", "b", "q", "p_ref")]
    cutoff = max([float(t.descriptor.cutoff) for t in model.terms_]
                 + [float(b.cutoff.max()) for b in baselines])
    module = GAPModel(terms, e0=e0, r_factor=model.R_.detach().to(torch.float64).clone(),
                      u_factor=model.U_.detach().to(torch.float64).clone(), cutoff=cutoff,
                      predictive=predictive, baselines=baselines).eval()
    energy = mta.ModelOutput(unit="eV", sample_kind="atom",
                             explicit_gradients=[])
    sigma = mta.ModelOutput(unit="eV", sample_kind="atom",
                            explicit_gradients=[])
    capabilities = mta.ModelCapabilities(
        outputs={"energy": energy, "energy_uncertainty": sigma}, atomic_types=species,
        interaction_range=cutoff, length_unit="angstrom", supported_devices=["cpu"],
        dtype="float64")
    from ._version import __version__

    terms_text = ", ".join([type(t.descriptor).__name__ for t in model.terms_]
                           + [type(b).__name__ for b in model.baselines])
    metadata = mta.ModelMetadata(
        name="gapkit GAP",
        description=(f"Gaussian approximation potential ({terms_text}; species "
                     f"{species}) exported by gapkit {__version__}; energy_uncertainty is "
                     "the GP's sigma (calibrated per structure when the fit calibrated it)"),
        references={"implementation": ["https://github.com/gapkit/gapkit"],
                    "architecture": ["Bartok et al., Phys. Rev. Lett. 104, 136403 (2010)"]})
    return mta.AtomisticModel(module, metadata, capabilities)


def export(model, path, *, overwrite: bool = False) -> Path:
    """Write ``model`` (a fitted :class:`~gapkit.GAP`; ``GAP.load`` reads a saved one) as a
    metatomic TorchScript file at ``path`` (refuses to overwrite unless asked); returns the
    path. See the module docstring for what is exported and the README for running it in
    LAMMPS, i-PI and ASE."""
    path = check_output_path(path, overwrite=overwrite, what="exported model",
                             flag="overwrite=True")
    atomistic = exported_module(model)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # metatomic is TorchScript by design; torch 2.13 marks torch.jit as deprecated
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit")
        atomistic.save(str(tmp))
    return path
