"""``make demo``: what gapkit does on the bundled Zuo 2020 silicon data.

Run as ``python -m gapkit.demo [--output DIR] [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def soap_summary(frames, output: Path) -> None:
    """SOAP descriptors of every atom, summarised per config_type, and a PCA map."""
    from .data import get_all_labels
    from .descriptors import SOAP

    soap = SOAP(cutoff=5.0, cutoff_width=0.5, n_max=8, l_max=6, atom_sigma=0.5, progress=True)
    t0 = time.perf_counter()
    result = soap.compute(frames, gradients=["positions"])
    elapsed = time.perf_counter() - t0
    n_atoms = result.n_centres
    print(f"SOAP ({soap}):\n  {n_atoms} atoms in {len(frames)} frames, "
          f"{result.n_features} features, values + position gradients in {elapsed:.1f} s "
          f"({elapsed / n_atoms * 1e3:.2f} ms/atom, {result.gradients.shape[0]} gradient entries)")
    labels = get_all_labels(frames)
    config = np.array([labels[s].config_type for s in result.centre_structure])
    reference = result.values[config == "AIMD-NVT"].mean(axis=0)
    reference /= np.linalg.norm(reference)
    print(f"  {'config_type':<12} {'atoms':>6}  mean k(q, <q_AIMD>)^4   min")
    for name in sorted(set(config)):
        sim = (result.values[config == name] @ reference) ** 4
        print(f"  {name:<12} {sim.size:>6}  {sim.mean():>20.4f}  {sim.min():.4f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centred = result.values - result.values.mean(axis=0)
    _, _, vt = np.linalg.svd(centred[:: max(1, n_atoms // 4000)], full_matrices=False)
    xy = centred @ vt[:2].T
    fig, ax = plt.subplots(figsize=(5, 4), dpi=150)
    for name in sorted(set(config)):
        sel = config == name
        ax.scatter(xy[sel, 0], xy[sel, 1], s=3, alpha=0.5, label=f"{name} ({sel.sum()})")
    ax.set_xlabel("SOAP principal component 1 (dimensionless)")
    ax.set_ylabel("SOAP principal component 2 (dimensionless)")
    ax.set_title("Zuo 2020 Si training set: atomic environments")
    ax.legend(markerscale=4, fontsize=7)
    fig.tight_layout()
    path = output / "soap_pca.png"
    fig.savefig(path)
    print(f"  wrote {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="demo_output", help="folder for the figures")
    parser.add_argument("--quick", action="store_true", help="a few frames only")
    args = parser.parse_args(argv)
    from .data import load_bundled

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    frames = load_bundled("Si_train.xyz")
    if args.quick:
        frames = frames[::20]
    soap_summary(frames, output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
