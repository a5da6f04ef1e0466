"""Errors, config validation, resolvers and W&B mode."""

from clexlab.utils.errors import UserError, report_user_errors

__all__ = ["UserError", "report_user_errors", "validate_config"]


def __getattr__(name: str):
    # The schema imports the RoPE code (which imports clexlab.arch, which needs UserError from
    # here): loaded on first use so importing clexlab.utils.errors never closes that circle.
    if name == "validate_config":
        from clexlab.utils.schema import validate_config

        return validate_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
