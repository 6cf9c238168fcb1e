"""data.loader.num_workers defaults to the CPUs this process may use, per local process."""

from __future__ import annotations

import os

import pytest

from visionforge.engine import data


@pytest.mark.parametrize(
    ("cpus", "local_world", "expected"),
    [(2, None, 2), (16, None, 8), (16, "4", 4), (3, "2", 1), (1, "4", 0)],
)
def test_default_workers_share_the_allowed_cpus(
    monkeypatch: pytest.MonkeyPatch, cpus: int, local_world: str | None, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    if local_world is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world)
    assert data.default_num_workers() == expected
