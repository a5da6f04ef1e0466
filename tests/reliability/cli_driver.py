"""Run several ``python train.py ...`` (or ``eval.py``) command lines in one process (see helpers.run_many).

Each case gets a fresh Hydra, its own environment variables and sys.argv, and
the real ``train.main``; its exit status and everything it wrote to stderr are
recorded. A case that raises instead of exiting records the traceback, which
the tests then find.
"""

import contextlib
import io
import json
import os
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def run_case(case: dict) -> dict:
    import runpy

    from hydra.core.global_hydra import GlobalHydra

    saved_env = dict(os.environ)
    os.environ.update(case.get("env", {}))
    script = case.get("script", "train.py")
    sys.argv = [script, *case["args"]]
    GlobalHydra.instance().clear()
    err = io.StringIO()
    rc = 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                # as `python train.py` does: Hydra finds conf/ next to the script's file
                runpy.run_path(str(ROOT / script), run_name="__main__")
            except SystemExit as exit_:
                rc = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:  # noqa: BLE001 - recorded for the test to see
                traceback.print_exc()
                rc = 99
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    return {"rc": rc, "stderr": err.getvalue()}


if __name__ == "__main__":
    cases = json.loads(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text(json.dumps([run_case(c) for c in cases]))
