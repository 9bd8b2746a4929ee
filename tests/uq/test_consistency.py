"""gapkit.uq.consistency: label_consistency finds swapped virial components and flipped
forces, and finds the old swap in the bundled Si data (nothing in the corrected copy)."""

from __future__ import annotations

import pytest
from uq_cases import _cells, _model

from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term, uq


def _strained_cells(n, seed):
    """EMT Cu cells with strains large enough to give every virial component a spread,
    alternately of config_type "strained" and "bulk"."""
    out = _cells(n, seed, strain=0.03, rattle=0.05)
    for k, atoms in enumerate(out):
        atoms.info["config_type"] = "bulk" if k % 2 else "strained"
    return out


def test_label_consistency_finds_swapped_virial_components_and_flipped_forces():
    frames = _strained_cells(48, 3)
    model = _model()
    clean = uq.label_consistency(model, frames)
    assert clean.ok, clean.summary()
    bad = []
    for atoms in frames:
        a = atoms.copy()
        if a.info["config_type"] == "strained":  # mlearn's xy, yz, zx order read as Voigt
            w = a.info["virial"].copy()
            w[1, 2] = w[2, 1] = atoms.info["virial"][0, 2]
            w[0, 2] = w[2, 0] = atoms.info["virial"][1, 2]
            a.info["virial"] = w
        bad.append(a)
    with pytest.warns(UserWarning, match="virial labels disagree"):
        report = uq.label_consistency(model, bad)
    flagged = {(row["config_type"], row["component"], row["flag"]) for row in report.flagged}
    assert flagged == {("strained", "yz", "swapped with xz"), ("strained", "xz", "swapped with yz")}
    flipped = [a.copy() for a in frames]
    for a in flipped[::2]:
        a.arrays["forces"] = -a.arrays["forces"]
    report = uq.label_consistency(model, flipped, kind="forces", warn=False)
    assert {row["flag"] for row in report.flagged} == {"sign flipped"}
    assert {row["config_type"] for row in report.flagged} == {"strained"}


@pytest.mark.slow
def test_bundled_si_virials_are_consistent_and_the_old_swap_is_found():
    """The bundled Zuo Si virials (corrected 2026-12-03) agree with a model fitted on energies
    and forces; re-swapping yz and xz on the AIMD-NVT frames, as the old files had them, is
    found there and nowhere else."""
    from gapkit.data import load_bundled

    frames = load_bundled("Si_train.xyz")
    model = GAP([Term(SOAP(cutoff=5.0, cutoff_width=1.0, n_max=4, l_max=3), SOAPKernel(zeta=4),
                      n_sparse=200)], noise=NoiseModel(energy=0.003, forces=0.05, virial=0.05),
                progress=False)
    assert uq.label_consistency(model, frames).ok
    for atoms in frames:
        if atoms.info["config_type"] == "AIMD-NVT":
            w = atoms.info["virial"].copy()
            w[[1, 2, 0, 2], [2, 1, 2, 0]] = w[[0, 2, 1, 2], [2, 0, 2, 1]]
            atoms.info["virial"] = w
    report = uq.label_consistency(model, frames, warn=False)
    assert {(r["config_type"], r["component"]) for r in report.flagged} == {
        ("AIMD-NVT", "yz"), ("AIMD-NVT", "xz")}


def _small_si_model():
    return GAP([Term(SOAP(cutoff=5.0, cutoff_width=1.0, n_max=4, l_max=3), SOAPKernel(zeta=4),
                     n_sparse=200)], noise=NoiseModel(energy=0.003, forces=0.05, virial=0.05),
               progress=False)


@pytest.mark.slow
def test_bundled_si_surface_forces_a_model_cannot_know_are_not_flagged():
    """A small model fitted on the Si energies and virials cannot predict the forces of the
    few Surface frames (r near 0, sigma about the labels' spread): reported, not flagged."""
    from gapkit.data import load_bundled

    report = uq.label_consistency(_small_si_model(), load_bundled("Si_train.xyz"),
                                  kind="forces", warn=False)
    assert report.ok, report.summary()
    surface = [row for row in report.table if row["config_type"] == "Surface"]
    assert all(row["r"] < 0.5 and row["sigma"] >= 0.5 * row["spread"] for row in surface)
    elastic = [row for row in report.table if row["config_type"] == "Elastic"]
    assert all(row["r"] > 0.9 and row["sigma"] < 0.5 * row["spread"] for row in elastic)


@pytest.mark.slow
def test_bundled_si_energies_in_the_wrong_unit_are_blamed_not_the_forces():
    """Energies x 1000 make every force component look scaled by 1/1000 against a fit on
    energies and virials; a fit on the forces alone predicts the virials (slope near 1)
    but not the energies, and the report blames the energies."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from gapkit.data import load_bundled

    frames = load_bundled("Si_train.xyz")
    for atoms in frames:
        results = dict(atoms.calc.results, energy=1000.0 * atoms.calc.results["energy"])
        atoms.calc = SinglePointCalculator(atoms, **results)
    report = uq.label_consistency(_small_si_model(), frames, kind="forces", warn=False)
    assert report.flagged and all(row["flag"].startswith("scaled") for row in report.flagged)
    slopes = {o["kind"]: o["slope"] for o in report.other_kinds}
    assert 0.5 < slopes["virial"] < 2.0 and slopes["energy"] > 100, report.other_kinds
    assert report.suspect == "energy"
    assert "the energy labels, not the forces, look wrong" in report.summary()
