"""RoPE variants: the CLEX ODE, its rotary module, the baselines, installation into HF models.

Pure torch: nothing here imports Lightning, Hydra or W&B.
"""

from clexlab.rope.clex import CLEXRotaryEmbedding
from clexlab.rope.dynamics import CLEXDynamics
from clexlab.rope.install import find_rotary, install_clex
from clexlab.rope.methods import RopeMethod, method_from_config
from clexlab.rope.own import OwnRope, own_rope
from clexlab.rope.solver import solve_log_inv_freq

__all__ = [
    "CLEXDynamics",
    "CLEXRotaryEmbedding",
    "OwnRope",
    "RopeMethod",
    "find_rotary",
    "install_clex",
    "method_from_config",
    "own_rope",
    "solve_log_inv_freq",
]
