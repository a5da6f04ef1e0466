"""LongBench from local jsonl files: THUDM/LongBench's prompts, output lengths, truncation and metrics.

Read THUDM/LongBench (``LongBench/config``, ``LongBench/metrics.py``,
``LongBench/pred.py``) for the definitions; the code here is independent,
on the libraries LongBench scores with (``rouge``, ``fuzzywuzzy``, ``jieba``).
"""

from clexlab.evaluation.longbench.config import (
    DATASETS,
    FIELDS,
    FIRST_LINE,
    NO_CHAT,
    LongBenchDataset,
)
from clexlab.evaluation.longbench.data import (
    LongBenchFile,
    load_longbench,
    read_records,
)
from clexlab.evaluation.longbench.metrics import METRICS, score_record
from clexlab.evaluation.longbench.runner import (
    format_longbench_table,
    longbench_eval,
    prompt_ids,
    run_longbench,
    score_dataset,
    truncate_middle,
)

__all__ = [
    "DATASETS",
    "FIELDS",
    "FIRST_LINE",
    "METRICS",
    "NO_CHAT",
    "LongBenchDataset",
    "LongBenchFile",
    "format_longbench_table",
    "load_longbench",
    "longbench_eval",
    "prompt_ids",
    "read_records",
    "run_longbench",
    "score_dataset",
    "score_record",
    "truncate_middle",
]
