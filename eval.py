"""Evaluate a clexlab checkpoint: held-out perplexity at several lengths.

    python eval.py ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt
    python eval.py ckpt_path=... eval.lengths=[128,512,2048]
"""

import hydra
from omegaconf import DictConfig

import clexlab.utils.resolvers  # noqa: F401
from clexlab.utils.checks import preflight_eval
from clexlab.utils.errors import report_user_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    preflight_eval(cfg)  # bad input fails here, before Lightning and transformers load
    from clexlab.workflows.evaluate import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
