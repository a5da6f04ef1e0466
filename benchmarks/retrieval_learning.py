"""How fast the tiny model learns the copy a passkey answer needs, under a retrieval mix: a learning probe.

The full experiment (``python train.py experiment=retrieval``) takes about 25
minutes on 2 CPU cores before it says whether the base retrieves; this probe
says in a few minutes whether a mix teaches the mechanism at all. A plain training loop
(AdamW with the default run's betas and weight decay, linear warm-up then a
constant ``--lr``, gradients clipped at 1) trains the tiny LLaMA
(``conf/model/tiny.yaml``, plain RoPE) on windows of ``--length`` tokens of
the stdlib corpus's train split, a ``--fraction`` of them replaced by
``RetrievalMix`` documents of ``--kinds``. ``--warmup-steps N`` first trains
N steps on windows of 128 tokens made only of ``numbers`` documents (dense
digit copying), batch 32. Every ``--every`` steps it scores 16 passkey
prompts (the evaluation's own template, sized to fit ``--length``)
teacher-forced, one forward each:

* ``copy``: the 2nd-5th digits of the key's second occurrence in its info
  line (``The pass key is 58213. Remember it. 58213 is ...``), each a copy
  of the digit that followed the same digit 15 tokens earlier;
* ``answer``: the five digits after the final ``The pass key is``, the
  passkey answer itself, a copy from anywhere in the prompt.

Chance is 0.10 for both (one digit in ten).

    python benchmarks/retrieval_learning.py [--kinds copy,copy,copy,passkey,niah,kv] [--fraction 0.8]
        [--lr 1e-3] [--steps 1500] [--warmup-steps 0] [--length 512] [--batch 8] [--every 100] [--threads 2]
        [--layers N] [--hidden N]   (the tiny model's sizes by default)
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch
from omegaconf import OmegaConf

from clexlab.data.corpus import StdlibCorpus
from clexlab.data.retrieval import KINDS, RetrievalMix, retrieval_window
from clexlab.data.tokenizer import ByteTokenizer
from clexlab.evaluation.passkey import QUESTION, TASK, filler_words, info_line
from clexlab.models.builder import build_tiny

TOKENIZER = ByteTokenizer()


def corpus_tokens(limit: int = 4_000_000) -> np.ndarray:
    """The first ``limit`` byte tokens of the stdlib corpus's train split, documents separated by end-of-document."""
    tokens: list[int] = []
    for text in StdlibCorpus().documents("train"):
        tokens += TOKENIZER.encode(text) + [TOKENIZER.eos_token_id]
        if len(tokens) >= limit:
            break
    return np.asarray(tokens[:limit])


def passkey_probe(model: torch.nn.Module, length: int, prompts: int = 16, seed: int = 7) -> tuple[float, float]:
    """Teacher-forced (copy, answer) digit accuracy over ``prompts`` passkey prompts of at most ``length`` tokens."""
    rng = random.Random(seed)
    hits = {"copy": 0, "answer": 0}
    totals = {"copy": 0, "answer": 0}
    for _ in range(prompts):
        key, depth = str(rng.randint(10000, 99999)), rng.random()
        words = filler_words(rng.randint(0, max(0, (length - 260) // 6)))
        cut = round(depth * len(words))
        text = f"{TASK}\n" + " ".join(words[:cut]) + f"\n{info_line(key)}\n" + " ".join(words[cut:]) + f"\n{QUESTION} {key}."
        ids = TOKENIZER.encode(text)
        with torch.no_grad():
            predicted = model(torch.tensor([ids])).logits[0].argmax(-1).tolist()
        second = text.index(key, text.index(key) + len(key))  # one byte per character
        last = text.rindex(key)
        for name, start, digits in (("copy", second, range(1, 5)), ("answer", last, range(5))):
            for j in digits:
                hits[name] += predicted[start + j - 1] == ids[start + j]
                totals[name] += 1
    return hits["copy"] / totals["copy"], hits["answer"] / totals["answer"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", default="copy,copy,copy,passkey,niah,kv", help=f"comma-separated, from {KINDS}")
    parser.add_argument("--fraction", type=float, default=0.8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--warmup-steps", type=int, default=0, help="steps on 128-token windows of `numbers` documents first")
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, default=None, help="model.num_layers instead of the tiny model's")
    parser.add_argument("--hidden", type=int, default=None, help="model.hidden_size instead of the tiny model's (heads stay 4)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    sizes = OmegaConf.to_container(OmegaConf.load("conf/model/tiny.yaml"))
    if args.layers:
        sizes["num_layers"] = args.layers
    if args.hidden:  # the MLP keeps the tiny model's ratio
        sizes["intermediate_size"] = round(sizes["intermediate_size"] * args.hidden / sizes["hidden_size"])
        sizes["hidden_size"] = args.hidden
    model = build_tiny({**sizes, "train_length": args.length}, TOKENIZER.vocab_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    stream = corpus_tokens()
    mix = RetrievalMix(args.fraction, args.kinds.split(","))
    numbers = RetrievalMix(1.0, ["numbers"], min_tokens=128)
    rng = random.Random(args.seed)

    def window(size: int, mix: RetrievalMix) -> list[int]:
        start = rng.randrange(len(stream) - size)
        natural = stream[start : start + size].tolist()
        if rng.random() >= mix.fraction:
            return natural
        return retrieval_window(TOKENIZER, natural, size, mix, random.Random(rng.getrandbits(64)))

    print(f"LLaMA {sizes['num_layers']} x {sizes['hidden_size']}, plain RoPE; {args.warmup_steps} steps of `numbers` at 128 x 32, then {args.steps} steps at "
          f"{args.length} x {args.batch}, kinds {args.kinds}, fraction {args.fraction}, lr {args.lr}")
    print("| step | phase | train loss | copy (key digits 2-5, 15 tokens back) | answer (passkey digits) | seconds |")
    print("|---:|---|---:|---:|---:|---:|")
    start = time.perf_counter()
    for step in range(1, args.warmup_steps + args.steps + 1):
        warming = step <= args.warmup_steps
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, step / 20)
        size, count, source = (129, 32, numbers) if warming else (args.length + 1, args.batch, mix)
        batch = torch.tensor([window(size, source) for _ in range(count)])
        logits = model(batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % args.every == 0 or step == args.warmup_steps:
            model.eval()
            copy, answer = passkey_probe(model, args.length)
            model.train()
            phase = "numbers@128" if warming else f"mix@{args.length}"
            print(f"| {step} | {phase} | {loss.item():.3f} | {copy:.2f} | {answer:.2f} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
