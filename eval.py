"""Long-context evaluation: perplexity vs length, passkey retrieval, report and figures.

    python eval.py ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt
    python eval.py model.path=/models/Llama-2-7b-hf eval.lengths=[4096,8192,16384]
    python eval.py model.path=/models/CLEX-7B-16K eval.protocol=sliding eval.stride=256
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
