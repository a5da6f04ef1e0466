"""Train a RoPE language model with CLEX (or a baseline) and report long-context perplexity.

    python train.py                                   # tiny LLaMA + CLEX on the stdlib corpus, CPU
    python train.py model=llama7b model.path=/models/Llama-2-7b-hf clex.max_scale=16
    python train.py rope=none                         # plain RoPE baseline
"""

import hydra
from omegaconf import DictConfig

import clexlab.utils.resolvers  # noqa: F401  (registers ${auto_precision:} and ${wandb_offline:})
from clexlab.utils.checks import preflight_train
from clexlab.utils.errors import report_user_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> None:
    preflight_train(cfg)  # bad input fails here, before any model, data or Trainer is built
    if cfg.get("dry_run"):  # per-GPU memory plan on the meta device; nothing is trained
        from clexlab.workflows.dry_run import dry_run

        dry_run(cfg)
        return
    if cfg.get("protocol"):  # experiment=extrapolation / curriculum_study: several runs, one summary
        from hydra.utils import get_method

        get_method(cfg.protocol.workflow)(cfg)
        return
    from clexlab.workflows.train import train

    train(cfg)


if __name__ == "__main__":
    main()
