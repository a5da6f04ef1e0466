"""RULER's variable tracking: follow a chain of assignments through noise.

A chain of ``num_hops + 1`` variables: ``VAR ABCDE = 12345``, then
``VAR FGHIJ = VAR ABCDE`` and so on, its lines inserted in order at random
places among the noise sentences. The question asks for every variable that
holds the first value; all of them must appear in the answer
(string_match_all). As in RULER, one solved example (3-letter variables, its
own value, noise sized to at most 500 tokens) precedes the question, and the
default is one chain of four hops over the noise haystack.
"""

from __future__ import annotations

import heapq
import random
import string

from clexlab.evaluation.ruler.base import RulerTask, Sample, TaskContext
from clexlab.evaluation.ruler.words import NOISE

TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {query} in the text above."
)
ANSWER_PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above, "
    "{num_v} variables are assigned the value {query}, they are: "
)
TOKENS_TO_GENERATE = 30
EXAMPLE_TOKENS = 500  # RULER sizes its in-context example to at most 500 tokens


def make_chains(rng: random.Random, num_chains: int, num_hops: int, name_length: int) -> tuple[list[list[str]], list[list[str]]]:
    """``num_chains`` chains of distinct upper-case variable names and their assignment lines."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < num_chains * (num_hops + 1):
        name = "".join(rng.choices(string.ascii_uppercase, k=name_length))
        if name not in seen:
            seen.add(name)
            names.append(name)
    chains, lines = [], []
    for c in range(num_chains):
        chain = names[c * (num_hops + 1) : (c + 1) * (num_hops + 1)]
        chains.append(chain)
        first = f"VAR {chain[0]} = {rng.randint(10000, 99999)}"
        lines.append([first] + [f"VAR {chain[j + 1]} = VAR {chain[j]} " for j in range(num_hops)])
    return chains, lines


def interleave_chains(chains: list[list[str]], rng: random.Random) -> list[str]:
    """All lines of all chains, shuffled across chains but in order within each (RULER's heap shuffle)."""
    heap = [(rng.random(), i, 0) for i in range(len(chains))]
    heapq.heapify(heap)
    out = []
    while heap:
        _, i, j = heapq.heappop(heap)
        out.append(chains[i][j])
        if j + 1 < len(chains[i]):
            heapq.heappush(heap, (rng.random(), i, j + 1))
    return out


def _task(rng: random.Random, n: int, num_chains: int, num_hops: int, name_length: int) -> tuple[str, str, list[str]]:
    chains, lines = make_chains(rng, num_chains, num_hops, name_length)
    value = lines[0][0].split("=")[-1].strip()
    noise = [NOISE] * n
    for chain_lines in lines:
        # Each chain's lines go to sorted random places, shifted so they stay in order.
        places = sorted(rng.sample(range(len(noise)), len(chain_lines))) if len(noise) >= len(chain_lines) else [0] * len(chain_lines)
        for j, (place, line) in enumerate(zip(places, chain_lines)):
            noise.insert(place + j, line)
    context = "\n".join(noise).replace(". \n", ".\n")
    return (
        TEMPLATE.format(context=context, query=value),
        ANSWER_PREFIX.format(num_v=num_hops + 1, query=value),
        chains[0],
    )


def example(rng: random.Random, ctx: TaskContext, num_chains: int = 1, num_hops: int = 4) -> str:
    """The solved in-context example: the largest noise (steps of 5 sentences) within 500 tokens, with its answer."""

    def text(n: int) -> str:
        task, prefix, answer = _task(random.Random(rng_seed), n, num_chains, num_hops, 3)
        return task + prefix + " " + " ".join(answer) + "\n"

    rng_seed = rng.getrandbits(64)
    n = 0
    while ctx.count_tokens(text(n + 5)) <= EXAMPLE_TOKENS:
        n += 5
    return text(n)


def vt_sample(rng: random.Random, n: int, ctx: TaskContext, num_chains: int = 1, num_hops: int = 4) -> Sample:
    """One variable-tracking sample: the in-context example, then ``n`` noise sentences holding the chain(s)."""
    shot = example(random.Random(rng.getrandbits(64)), ctx, num_chains, num_hops)
    task, prefix, answer = _task(rng, n, num_chains, num_hops, 5)
    return Sample(shot + task, prefix, answer)


TASKS = {"vt": RulerTask("vt", "variable_tracking", TOKENS_TO_GENERATE, "all", vt_sample)}
