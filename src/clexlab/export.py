"""Export a clexlab CLEX checkpoint in the released CLEX format.

    python -m clexlab.export ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt out=exports/clex-tiny [overwrite=true]

writes ``out/config.json`` (the family's config + ``rope_scaling: {type: clex,
...}``, ``log_scale``, ``use_flashattn``) and ``out/model.safetensors`` (the
model's weights plus ``model.clex_layer.proj_func.ode_up_proj`` /
``ode_down_proj`` and ``model.clex_layer.inv_freq``), and copies the tokenizer
files when the model came from a Hugging Face directory. ``python eval.py
model.path=<out>`` reads it back; see :mod:`clexlab.models.official_clex` for
the format. A directory that already holds files is refused unless
``overwrite=true``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from clexlab.utils.errors import UserError, report_user_errors

USAGE = "usage: python -m clexlab.export ckpt_path=<clexlab .ckpt> out=<directory> [overwrite=true]"
BOOLEANS = {"true": True, "false": False}


def parse_args(argv: list[str]) -> dict[str, str]:
    """``key=value`` arguments (Hydra style) into a dict; ``ckpt_path`` and ``out`` required."""
    args: dict[str, str] = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in ("ckpt_path", "out", "overwrite"):
            raise UserError(f"unknown argument {item!r}; {USAGE}")
        args[key] = value
    for key in ("ckpt_path", "out"):
        if not args.get(key):
            raise UserError(f"set {key}=...; {USAGE}")
    if args.get("overwrite", "false").lower() not in BOOLEANS:
        raise UserError(f"overwrite must be true or false, got {args['overwrite']!r}; {USAGE}")
    return args


def export_checkpoint(ckpt_path: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Rebuild a clexlab checkpoint's model and write it in the released CLEX format.

    Args:
        ckpt_path: a checkpoint written by ``train.py`` with ``rope=clex``.
        out: output directory (refused when it holds files, unless ``overwrite``).
        overwrite: replace the contents of a non-empty ``out``.

    Returns:
        The output directory.
    """
    from clexlab.models.official_clex import export_official_clex
    from clexlab.utils.checks import CKPT_HINT, require_file
    from clexlab.workflows.evaluate import load_checkpoint

    require_file(str(ckpt_path), "ckpt_path", CKPT_HINT)
    module, ckpt = load_checkpoint(str(ckpt_path))
    model_cfg = ckpt["hyper_parameters"]["model"]
    if not module.rope_method.exports:
        raise UserError(
            f"ckpt_path={ckpt_path} was trained with rope={module.rope_method.name}; only CLEX models export to the CLEX format"
        )
    tokenizer = model_cfg.get("tokenizer", "bytes")
    return export_official_clex(
        module.model,
        out,
        tokenizer_dir=model_cfg.get("path") if tokenizer == "hf" else None,
        byte_tokenizer=tokenizer == "bytes",
        overwrite=overwrite,
    )


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m clexlab.export``."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = export_checkpoint(args["ckpt_path"], args["out"], BOOLEANS[args.get("overwrite", "false").lower()])
    print(f"exported {args['ckpt_path']} to {out} (released CLEX format); evaluate with: python eval.py model.path={out}")


if __name__ == "__main__":
    main()
