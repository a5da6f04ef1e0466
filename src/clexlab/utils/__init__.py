"""Errors, config validation, resolvers and W&B mode."""

from clexlab.utils.errors import UserError, report_user_errors
from clexlab.utils.schema import validate_config

__all__ = ["UserError", "report_user_errors", "validate_config"]
