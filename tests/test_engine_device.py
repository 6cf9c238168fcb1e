"""One device choice for the trainer, evaluation, predict and the loader benchmark."""

from __future__ import annotations

import pytest
import torch

from visionforge.engine.distributed import choose_device
from visionforge.errors import ConfigError


def test_cpu_is_the_cpu_and_auto_follows_cuda_availability() -> None:
    assert choose_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_names_the_option_the_user_set() -> None:
    with pytest.raises(ConfigError, match=r"^--device: 'cuda' requested but no CUDA device"):
        choose_device("cuda", option="--device")
    with pytest.raises(ConfigError, match=r"^trainer\.device: 'cuda' requested"):
        choose_device("cuda")
