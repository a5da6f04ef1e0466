"""Nothing a user wrote is replaced: export, multirun summaries, the token cache; and every such write is atomic.

Writers outside a run's own directory: ``python -m clexlab.export`` (``out=``),
``python -m clexlab.summarize`` and the multirun callback (the sweep directory
or ``--out``), and the token cache (``.cache/clexlab``). Each test plants a
user's file where the writer writes and checks it is still there, byte for
byte, and that no temporary file is left behind.
"""

from __future__ import annotations

import json

import numpy as np
import pytest


def make_run(root, name, method, ppl, L=64):
    run = root / name
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"train_length": L, "ppl": {str(k): v for k, v in ppl.items()}, "method": method}))
    return run


def leftovers(directory):
    return sorted(p.name for p in directory.rglob("*.tmp"))


# ------------------------------------------------------------------------------ export
def test_export_refuses_a_directory_that_holds_a_model(tmp_path, capsys):
    from clexlab.export import main
    from tests.workflows.test_eval_suite import save_fake_checkpoint

    save_fake_checkpoint(tmp_path / "tiny.ckpt")
    llama = tmp_path / "my-llama"
    llama.mkdir()
    (llama / "config.json").write_text('{"model_type": "llama"}')
    (llama / "model.safetensors").write_bytes(b"precious weights")
    with pytest.raises(SystemExit) as stop:
        main([f"ckpt_path={tmp_path / 'tiny.ckpt'}", f"out={llama}"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: out=") and "is not empty" in err and "overwrite=true" in err and err.count("\n") == 1
    assert (llama / "model.safetensors").read_bytes() == b"precious weights"
    assert sorted(p.name for p in llama.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-llama", "tiny.ckpt"]  # no half-written sibling

    main([f"ckpt_path={tmp_path / 'tiny.ckpt'}", f"out={llama}", "overwrite=true"])  # asked for: replaced whole
    assert json.loads((llama / "config.json").read_text())["rope_scaling"]["type"] == "clex"
    assert (llama / "model.safetensors").read_bytes() != b"precious weights"


# ------------------------------------------------------------------------------ summaries
def test_summarize_never_replaces_a_summary_it_did_not_write(tmp_path, capsys):
    from clexlab.summarize import main

    make_run(tmp_path, "0", "clex", {64: 4.0, 128: 4.4})
    (tmp_path / "summary.md").write_text("my notes on this sweep\n")
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "summary.md exists and was not written by clexlab" in err and "--out" in err
    assert (tmp_path / "summary.md").read_text() == "my notes on this sweep\n"
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "ppl_vs_length.png").exists()  # all or nothing

    assert main([str(tmp_path), "--out", str(tmp_path / "elsewhere")]) == 0
    assert "| clex | 1 |" in (tmp_path / "elsewhere" / "summary.md").read_text()


def test_summarize_replaces_its_own_summary_but_not_an_edited_one(tmp_path, capsys):
    from clexlab.summarize import main

    make_run(tmp_path, "0", "clex", {64: 4.0, 128: 4.4})
    assert main([str(tmp_path)]) == 0
    make_run(tmp_path, "1", "yarn-x8", {64: 3.0, 128: 3.1})
    assert main([str(tmp_path)]) == 0  # its own files, unchanged since: rewritten with the new run
    assert "yarn-x8" in (tmp_path / "summary.md").read_text()
    assert leftovers(tmp_path) == []
    (tmp_path / "summary.json").write_text('{"edited": true}\n')  # the user edits what clexlab wrote
    capsys.readouterr()
    assert main([str(tmp_path)]) == 2
    assert "summary.json exists and was not written by clexlab" in capsys.readouterr().err
    assert json.loads((tmp_path / "summary.json").read_text()) == {"edited": True}


def test_multirun_summary_goes_beside_a_users_summary(tmp_path, caplog):
    from omegaconf import OmegaConf

    from clexlab.utils.hydra_callbacks import FALLBACK, SummarizeMultirun

    make_run(tmp_path, "0", "clex", {64: 4.0, 128: 4.4})
    make_run(tmp_path, "1", "none", {64: 3.0, 128: 6.0})
    (tmp_path / "ppl_vs_length.png").write_bytes(b"the user's own figure")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, "logger": None})
    SummarizeMultirun().on_multirun_end(config)
    assert (tmp_path / "ppl_vs_length.png").read_bytes() == b"the user's own figure"
    assert not (tmp_path / "summary.md").exists()
    assert "| none | 1 |" in (tmp_path / FALLBACK / "summary.md").read_text()
    assert any("ppl_vs_length.png exists and was not written by clexlab" in r.getMessage() for r in caplog.records)
    assert leftovers(tmp_path) == []


def test_atomic_write_keeps_the_previous_file_when_writing_fails(tmp_path, monkeypatch):
    from clexlab.evaluation import report

    target = tmp_path / "summary.json"
    report.write_json(target, {"v": 1})
    assert oct(target.stat().st_mode & 0o777) == "0o644"  # not mkstemp's 0600

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report.os, "replace", full_disk)
    with pytest.raises(OSError):
        report.write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


# ------------------------------------------------------------------------------ token cache
class Docs:
    """A corpus of three fixed documents."""

    name = "docs"

    def fingerprint(self):
        return "v1"

    def documents(self, split):
        yield from ["alpha beta", "gamma", "delta epsilon"]


def test_token_cache_is_written_whole_and_keeps_what_another_run_wrote(tmp_path, monkeypatch):
    from clexlab.data import tokens
    from clexlab.data.tokenizer import ByteTokenizer

    (tmp_path / "notes.txt").write_text("a user's file in the cache directory")
    real_save = np.save

    def killed(f, array):  # the process dies half-way through writing the cache
        f.write(b"\x93NUMPY half")
        raise KeyboardInterrupt

    monkeypatch.setattr(tokens.np, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        tokens.tokenize_split(Docs(), ByteTokenizer(), "train", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no cache, no temporary file

    monkeypatch.setattr(tokens.np, "save", real_save)
    first = tokens.tokenize_split(Docs(), ByteTokenizer(), "train", tmp_path)
    cached = [p for p in tmp_path.iterdir() if p.suffix == ".npy"]
    assert len(cached) == 1 and oct(cached[0].stat().st_mode & 0o777) == "0o644"
    # Another run writes the same cache file while this one tokenizes: its file is kept, not replaced.
    cached[0].unlink()
    monkeypatch.setattr(tokens.np, "save", lambda f, a: (real_save(f, a), cached[0].write_bytes(b"theirs")))
    tokens.tokenize_split(Docs(), ByteTokenizer(), "train", tmp_path)
    assert cached[0].read_bytes() == b"theirs"
    # A damaged cache (here empty, or theirs above) is rebuilt, not trusted.
    monkeypatch.setattr(tokens.np, "save", real_save)
    cached[0].write_bytes(b"")
    again = tokens.tokenize_split(Docs(), ByteTokenizer(), "train", tmp_path)
    assert np.array_equal(np.asarray(again), np.asarray(first))
    assert (tmp_path / "notes.txt").read_text() == "a user's file in the cache directory"
    assert leftovers(tmp_path) == [] and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

