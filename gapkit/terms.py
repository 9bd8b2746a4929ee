"""One additive term of a GAP's local energy: a descriptor and its kernel, with the
settings of its sparse points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .descriptors import SOAP
from .kernels import DESCRIPTORS, KERNELS, SOAPKernel, make_kernel

__all__ = ["Term", "default_terms"]


@dataclass
class Term:
    """One additive term of the local energy: a descriptor, its kernel, its sparse points.

    Parameters
    ----------
    descriptor : SOAP, TwoBody or SymmetryFunctions
    kernel : SOAPKernel, TwoBodyKernel, SEKernel, NTKKernel or str
        A kernel object, or a name for one with default settings: ``"soap"``,
        ``"ntk"``, ``"twobody"`` or ``"se"`` (see :func:`gapkit.kernels.make_kernel`).
        The term binds the kernel to its descriptor (:meth:`DescriptorKernel.bind`):
        a two-body kernel takes the descriptor's cutoff, and a kernel whose own
        setting contradicts the descriptor's is refused with a ValueError.
    n_sparse : int, dict, "all" or "auto"
        Number of sparse points (or ``{type: count}``, gap_fit's per-species count); a
        total is split over kernel types (central species for SOAP, species pairs for
        two-body) equally, a type with fewer environments than its share getting all of
        them (``sparse_options={"split": "proportional"}``: in proportion to their
        environments, gapkit's rule before 0.2). ``"all"``: every distinct training
        environment (the exact-GP limit; for small data). ``"auto"``: one point per 13
        training environments, at least 500 and at most 2000
        (:func:`gapkit.gp.sparsify.auto_sparse_count`), the default.
    sparse_method : {"cur", "fps", "random", "uniform"}
        How sparse points are chosen ("uniform": an even grid, for two-body).
    sparse_options : dict, optional
        ``split`` (above); the rest is passed to
        :func:`gapkit.gp.sparsify.sparse_points`. For "cur" the default
        is ``cur_mode="sample"``: rows drawn with probability proportional to their
        leverage (seeded by ``GAP(random_state=...)``), as gap_fit's ``cur_points``
        (benchmarks/README.md compares it with ``cur_mode="deterministic"``).
    """

    descriptor: Any
    kernel: Any
    n_sparse: int | dict | str = "auto"
    sparse_method: str = "cur"
    sparse_options: dict | None = None

    def __post_init__(self) -> None:
        if isinstance(self.kernel, str):  # a kernel by name, with default settings
            self.kernel = make_kernel(self.kernel)
        if not hasattr(self.kernel, "bind"):
            raise TypeError(f"Term: kernel must be a gapkit kernel or a kernel name, got "
                            f"{type(self.kernel).__name__}")
        self.kernel.bind(self.descriptor)

    def __getattr__(self, name: str) -> Any:
        if name == "sparse_":  # fitted state moved to the model in 0.2
            raise AttributeError("Term.sparse_ is gone: a term holds settings only; the "
                                 "fitted sparse points of term i are GAP.sparse_sets_[i]")
        raise AttributeError(f"'Term' object has no attribute {name!r}")

    def for_species(self, species: Any, kernel: Any = None, *,
                    progress: bool = False) -> "Term":
        """A copy whose descriptor knows the training ``species`` (atomic numbers), with
        ``kernel`` (default: this term's own kernel object). A descriptor with fixed
        species that lacks one of them raises ValueError."""
        params = self.descriptor.get_params()
        if params.get("species") is None:
            params["species"] = list(species)
        else:
            missing = sorted(set(species) - set(params["species"]))
            if missing:
                raise ValueError(f"the training data contains species {missing} that the "
                                 f"descriptor's fixed species {params['species']} lacks")
        desc = type(self.descriptor)(**params)
        desc.progress = bool(progress)  # a bar only when a call spans several batches
        return Term(desc, self.kernel if kernel is None else kernel, self.n_sparse,
                    self.sparse_method, self.sparse_options)

    def get_params(self) -> dict:
        """Constructor arguments (the descriptor and kernel objects themselves)."""
        return {"descriptor": self.descriptor, "kernel": self.kernel, "n_sparse": self.n_sparse,
                "sparse_method": self.sparse_method, "sparse_options": self.sparse_options}

    def to_dict(self) -> dict:
        """The term as JSON-serialisable data (model files, configs); :meth:`from_dict`
        rebuilds it, bit for bit (the raw GPyTorch parameters are kept)."""
        kernel = self.kernel
        raw = {name: float(p.detach().reshape(()))
               for name, p in kernel.named_parameters() if p.numel() == 1}
        return {"descriptor": {"type": type(self.descriptor).__name__,
                               "params": self.descriptor.get_params()},
                "kernel": {"type": type(kernel).__name__, "params": kernel.get_params(),
                           "raw": raw},
                "n_sparse": self.n_sparse, "sparse_method": self.sparse_method,
                "sparse_options": self.sparse_options}

    @classmethod
    def from_dict(cls, data: dict) -> "Term":
        """Inverse of :meth:`to_dict`. Raises KeyError for an unknown class name."""
        desc = DESCRIPTORS[data["descriptor"]["type"]](**data["descriptor"]["params"])
        kernel = KERNELS[data["kernel"]["type"]](**data["kernel"]["params"])
        for name, value in data["kernel"].get("raw", {}).items():
            getattr(kernel, name).data.fill_(float(value))
        return cls(desc, kernel, data["n_sparse"], data["sparse_method"],
                   data.get("sparse_options"))


def default_terms() -> list[Term]:
    """GAP's default: one SOAP term (cutoff 5 Å, width 1 Å, n_max 8, l_max 6, atom_sigma
    0.5 Å, zeta 4, delta 1 eV, CUR sparse points scaled with the data: ``n_sparse="auto"``,
    one per 13 environments within [500, 2000])."""
    return [Term(SOAP(cutoff=5.0, cutoff_width=1.0, n_max=8, l_max=6, atom_sigma=0.5),
                 SOAPKernel(zeta=4, delta=1.0), n_sparse="auto", sparse_method="cur")]
