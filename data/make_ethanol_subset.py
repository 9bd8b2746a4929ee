#!/usr/bin/env python3
"""Write ``ethanol_rmd17_200.xyz``: the first 200 frames of rMD17 ethanol, split 01, train.

Usage (from the repository root, with ``shared/`` beside the repository)::

    .venv/bin/python data/make_ethanol_subset.py \
        [--source ../shared/datasets/rmd17/rmd17_ethanol_train_01.xyz] \
        [--output data/ethanol_rmd17_200.xyz] [--n-frames 200]

The frames are copied line for line (no re-formatting of numbers), so every value in the
output is byte-identical to the source file. The script then reads both files with ASE and
checks that positions, energies and forces of the copied frames agree exactly, and prints
the SHA-256 of both files for ``ethanol_rmd17_PROVENANCE.md``.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import ase.io
import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO.parent / "shared" / "datasets" / "rmd17" / "rmd17_ethanol_train_01.xyz"
DEFAULT_OUTPUT = REPO / "data" / "ethanol_rmd17_200.xyz"


def first_frames(lines: list[str], n_frames: int) -> list[str]:
    """Return the lines of the first ``n_frames`` frames of an (ext)xyz file."""
    out: list[str] = []
    pos = 0
    for k in range(n_frames):
        if pos >= len(lines):
            raise ValueError(f"source has only {k} frames, {n_frames} requested")
        n_atoms = int(lines[pos].split()[0])
        out.extend(lines[pos : pos + n_atoms + 2])
        pos += n_atoms + 2
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--n-frames", type=int, default=200)
    args = parser.parse_args()

    lines = args.source.read_text().splitlines(keepends=True)
    args.output.write_text("".join(first_frames(lines, args.n_frames)))

    # Check: the subset reads back identical to the first n frames of the source.
    src = ase.io.read(args.source, index=f":{args.n_frames}", format="extxyz")
    sub = ase.io.read(args.output, index=":", format="extxyz")
    assert len(sub) == args.n_frames == len(src)
    for a, b in zip(src, sub):
        assert np.array_equal(a.numbers, b.numbers)
        assert np.array_equal(a.positions, b.positions)
        assert a.calc.results["energy"] == b.calc.results["energy"]
        assert np.array_equal(a.calc.results["forces"], b.calc.results["forces"])
        assert a.info == b.info
    print(f"wrote {args.output} ({len(sub)} frames)")
    print(f"sha256 source {sha256(args.source)}  {args.source.name}")
    print(f"sha256 output {sha256(args.output)}  {args.output.name}")


if __name__ == "__main__":
    main()
