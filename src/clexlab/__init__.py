"""clexlab: CLEX continuous length extrapolation for RoPE language models."""

__version__ = "0.1.0"
