"""Kernels on descriptors, with the derivatives that force and virial observations need.

Every kernel is a :class:`gpytorch.kernels.Kernel` subclass of
:class:`~gapkit.kernels.base.DescriptorKernel` (its hyper-parameters carry GPyTorch
constraints and optional priors), one class per module:

``soap``     :class:`SOAPKernel`, GAP's ``delta^2 (q . q')^zeta``
``twobody``  :class:`TwoBodyKernel`, squared exponential in a pair distance times the
             descriptor's smooth cutoff
``se``       :class:`SEKernel`, squared exponential on scaled descriptor vectors
``ntk``      :class:`NTKKernel` (and the analytic :func:`nngp_and_ntk`)
``registry`` :data:`KERNELS`, :data:`DESCRIPTORS` and :func:`make_kernel`

Each kernel implements, in descriptor space, the operations that the GP layer contracts
with descriptor gradients (all eV^2; ``delta`` is the prior standard deviation of a local
energy, eV):

``value(q1, q2)``
    ``k(q1_i, q2_m)``, shape (n1, n2).
``grad_contract(q1, q2, g, centre)``
    ``sum_D dk(q1[centre[e]], q2_m)/dq1_D * g[e, r, D]``, shape (n_entries, r, n2): force
    rows with ``g`` the position gradients, virial rows with the strain gradients.
``hessian_contract(q1, q2, g1, c1, g2, c2)``
    ``g1[e]^T d^2k/dq1 dq2 g2[f]``, shape (E, r1, F, r2) (exact GP, force variances).
``weighted_gradient(q1, q2, w)`` and ``force_prior_variance(...)``
    the gradient of the GP mean and the prior variance of each force component.

Kernels between centres of different type (central species, species pair) are zero; the
GP layer applies that mask, the kernels themselves do not. ``get_params()`` returns the
constructor keywords, so ``type(k)(**k.get_params())`` is the same kernel.
"""

from .base import DescriptorKernel, padded_entries_by_atom
from .ntk import NTKKernel, nngp_and_ntk
from .registry import DESCRIPTORS, KERNEL_NAMES, KERNELS, make_kernel
from .se import SEKernel
from .soap import SOAPKernel
from .twobody import TwoBodyKernel

__all__ = ["DESCRIPTORS", "KERNELS", "KERNEL_NAMES", "DescriptorKernel", "NTKKernel",
           "SEKernel", "SOAPKernel", "TwoBodyKernel", "make_kernel", "nngp_and_ntk",
           "padded_entries_by_atom"]
