"""RoPE variants: the CLEX ODE, its rotary module and installation into HF models.

Pure torch: nothing here imports Lightning, Hydra or W&B.
"""

from clexlab.rope.clex import CLEXRotaryEmbedding
from clexlab.rope.dynamics import CLEXDynamics
from clexlab.rope.install import find_rotary, head_dim_of, install_clex, rope_base
from clexlab.rope.solver import solve_log_inv_freq

__all__ = [
    "CLEXDynamics",
    "CLEXRotaryEmbedding",
    "find_rotary",
    "head_dim_of",
    "install_clex",
    "rope_base",
    "solve_log_inv_freq",
]
