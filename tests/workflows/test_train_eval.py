"""Few-step training through Hydra compose and the real CLI, then eval.py on its checkpoint."""

import json

import pytest
import torch

from tests.conftest import FAST, run_cli



def test_train_through_compose_writes_results_and_checkpoints(compose_train, tmp_path):
    from clexlab.workflows.train import train

    cfg = compose_train(*FAST, "logger=csv")
    payload = train(cfg)
    run = tmp_path / "run"
    saved = json.loads((run / "results.json").read_text())
    assert saved == json.loads(json.dumps(payload))
    assert saved["train_length"] == 32
    assert set(saved["ppl"]) == {"32", "64", "128", "256"}
    assert len(set(saved["tokens"].values())) == 1  # same targets at every length
    assert all(1.0 < v < 300 for v in saved["ppl"].values())
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-step*.ckpt"))
    metrics = (run / "csv" / "metrics.csv").read_text().splitlines()[0]
    for key in ("train/loss", "train/lr", "train/scale_t", "val/ppl@32", "val/ppl@256", "test/ppl@128"):
        assert key in metrics

    # eval.py's workflow on that checkpoint, scoring the user's own text instead of the stdlib
    from clexlab.workflows.evaluate import evaluate

    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(40):
        (texts / f"{i}.txt").write_text(f"line {i} of a plain text corpus\n" * 20)
    cfg = compose_train(
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        "data=text",
        f"data.corpus.train_files=[{texts}/*.txt]",
        "eval.multiples=[1,2]",
        "eval.max_tokens=512",
        "eval.split=val",
        config_name="eval",
    )
    other = evaluate(cfg)
    assert other["train_length"] == 32 and set(other["ppl"]) == {"32", "64"}
    assert other["ppl"]["32"] != pytest.approx(saved["ppl"]["32"], rel=1e-3)  # another corpus, another number


def test_rope_none_trains_with_plain_rope(compose_train, tmp_path):
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from clexlab.workflows.train import train

    cfg = compose_train(*FAST, "rope=none", "logger=none", "trainer.max_steps=2", "trainer.val_check_interval=2")
    payload = train(cfg)
    assert payload["rope"] == "none"
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any("rotary_emb.dynamics" in k for k in ckpt["state_dict"])
    assert LlamaRotaryEmbedding  # plain module kept (checked through the state dict above)


def test_cli_train_then_eval_on_its_checkpoint(tmp_path):
    run = tmp_path / "train"
    res = run_cli("train.py", *FAST, "logger=csv", f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Held-out perplexity" in res.stdout
    trained = json.loads((run / "results.json").read_text())

    out = tmp_path / "eval"
    res = run_cli("eval.py", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "eval.max_tokens=512", f"hydra.run.dir={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| 128 | 4 |" in res.stdout
    evaluated = json.loads((out / "results.json").read_text())
    assert evaluated["train_length"] == 32
    # same weights, same targets: the numbers agree with the end of training
    for n, ppl in trained["ppl"].items():
        assert evaluated["ppl"][n] == pytest.approx(ppl, rel=1e-4)


def test_wandb_logger_goes_offline_without_a_key(tmp_path):
    run = tmp_path / "wb"
    env = {"WANDB_API_KEY": "", "WANDB_MODE": "", "HOME": str(tmp_path), "NETRC": str(tmp_path / "none")}
    res = run_cli("train.py", *FAST, "trainer.max_steps=2", "trainer.val_check_interval=2", f"hydra.run.dir={run}", env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert list((run / "wandb").glob("offline-run-*"))
