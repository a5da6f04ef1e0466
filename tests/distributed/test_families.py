"""DDP and FSDP2 on 2 CPU ranks for a mixture of experts (Mixtral) and a partial-rotary family (GPT-NeoX).

The same check as tests/distributed/test_strategies.py (the losses, the CLEX ODE
and every weight of two ranks equal one process with the global batch), through
real ``train.py`` runs with ``model.arch=<family>``: FSDP2 shards Mixtral's
experts with their layer and GPT-NeoX's renamed backbone, and the ODE (over
GPT-NeoX's 25 % rotary dimension) stays whole and averaged on every rank.
"""

from __future__ import annotations

import pytest

from tests.distributed.test_strategies import check_matches_reference, end_records, train

# head_dim 16: GPT-NeoX rotates 4 of its dimensions (2 frequencies), the smallest CLEX state there is.
FAMILY = ["model.hidden_size=64", "model.intermediate_size=64"]


@pytest.fixture(scope="module", params=["mixtral", "gpt_neox"])
def family(request, tmp_path_factory):
    arch = request.param
    tmp = tmp_path_factory.mktemp(f"family-{arch}")
    args = [f"model.arch={arch}", *FAMILY]
    runs = {
        "reference": train(tmp, "reference", *args, "trainer.devices=1", "data.batch_size=8"),
        "ddp": train(tmp, "ddp", *args, "trainer=ddp", "trainer.devices=2", "data.batch_size=4"),
        "fsdp": train(tmp, "fsdp", *args, "trainer=fsdp", "trainer.devices=2", "data.batch_size=4"),
    }
    assert runs["reference"]["rc"] == 0, runs["reference"]["stderr"][-3000:]
    return arch, runs


def test_ddp_and_fsdp_train_what_one_process_trains(family):
    arch, runs = family
    check_matches_reference(runs["ddp"], runs["reference"])
    check_matches_reference(runs["fsdp"], runs["reference"])
    for end in end_records(runs["fsdp"]).values():
        assert end["layer_sharded"] and end["layer_local_numel"] * 2 == end["layer_numel"], arch
        assert not end["rope_sharded"]
