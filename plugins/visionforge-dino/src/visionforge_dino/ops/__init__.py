"""Multi-scale deformable attention: CUDA kernel, C++ CPU kernel and PyTorch reference.

``multi_scale_deformable_attention`` is the functional op, ``MultiScaleDeformableAttention``
the layer. The backend is chosen per call (see :mod:`visionforge_dino.ops.backends`);
``VISIONFORGE_MSDA_BACKEND=cuda|cpu|pytorch`` overrides it.
"""

from visionforge_dino.ops.backends import BACKEND_ENV, select_backend
from visionforge_dino.ops.errors import MSDAInputError, OpsBuildError
from visionforge_dino.ops.functional import multi_scale_deformable_attention
from visionforge_dino.ops.module import MultiScaleDeformableAttention
from visionforge_dino.ops.reference import ms_deform_attn_pytorch

__all__ = [
    "BACKEND_ENV",
    "MSDAInputError",
    "MultiScaleDeformableAttention",
    "OpsBuildError",
    "ms_deform_attn_pytorch",
    "multi_scale_deformable_attention",
    "select_backend",
]
