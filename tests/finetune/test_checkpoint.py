"""A checkpoint file is loaded as data only: one that names code to run is refused, unrun."""

import os

import pytest
import torch

from llmloop.finetune.checkpoint import load_data, rng_state, set_rng_state


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save({"step": 3, "payload": RunsCode()}, tmp_path / "trainer_state.pt")
    with pytest.raises(Exception, match=r"[Ww]eights only"):
        load_data(tmp_path / "trainer_state.pt")
    assert not (tmp_path / "pwned").exists()


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path) -> None:
    import random

    import numpy as np

    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_data(tmp_path / "rng.pt"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
