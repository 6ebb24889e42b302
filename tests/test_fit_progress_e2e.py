"""Fit 4D Gaussians' progress as the server reports it, through a real ComfyUI: a progress event every step, moving
from the start of the fit to its end, and reaching the end also when the time budget stops the fit long before the
step count (the bar follows the schedule's fraction, not steps / iterations).

What the front-ends show as the *overall* progress is theirs: finished nodes / nodes of the prompt, where a node
counts as finished when it sends an "executed" message (only nodes with something to show do) or was cached
(front-ends 1.32.9 and 1.58.1 alike, executionStore). No node's progress bar moves that figure while it runs; the fit's
bar is the "current node" one (and the second percentage in 1.58's tab title)."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.e2e


def _fit_prompt(iterations: int, seconds: float) -> dict:
    return {
        "1": {"class_type": "CharacterShotSyntheticCharacter",
              "inputs": {"motion": "wave", "num_frames": 3, "scale": 0.25, "seed": 0, "num_gaussians": 800,
                         "backend": "torch"}},
        "2": {"class_type": "CharacterShotFit4DGaussians",
              "inputs": {"multiview": ["1", 0], "iterations": iterations, "seconds": seconds, "scale": 0.5,
                         "initial_gaussians": 800, "densify": False, "backend": "torch", "preview_every": 0}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
    }


def _fit_progress(comfy, prompt: dict) -> tuple[list[tuple[float, int, int]], float, float]:
    """(time, value, max) of every progress event of the fit node, and when the node started and ended."""
    seen = []
    comfy.run(prompt, timeout=600, on_event=lambda m: seen.append((time.perf_counter(), m)))
    starts = [t for t, m in seen if m["type"] == "executing" and (m["data"] or {}).get("node") == "2"]
    ends = [t for t, m in seen if m["type"] == "executing" and starts and t > starts[0]
            and (m["data"] or {}).get("node") != "2"]
    events = [(t, m["data"]["value"], m["data"]["max"]) for t, m in seen
              if m["type"] == "progress" and m["data"].get("node") == "2"]
    assert starts and ends, [m["type"] for _, m in seen]
    return events, starts[0], ends[0]


def test_fit_reports_a_step_at_a_time_up_to_its_end(comfy):
    events, _, _ = _fit_progress(comfy, _fit_prompt(40, 0.0))
    assert [v for _, v, _ in events] == list(range(1, 41))
    assert {m for _, _, m in events} == {40}


def test_a_time_budget_fit_moves_its_bar_through_the_budget_to_the_end(comfy):
    """100 000 steps allowed, 10 seconds given: the bar follows the budget and ends full, not at steps / 100 000."""
    events, start, end = _fit_progress(comfy, _fit_prompt(100000, 10.0))
    values = [v for _, v, _ in events]
    assert {m for _, _, m in events} == {100000}
    assert values == sorted(values), "the bar went backwards"
    assert values[-1] == 100000, values[-5:]
    assert len(set(values)) >= 10, values
    # it moves during the fit, not only at its end: updates over more than half of the node's run
    assert events[-1][0] - events[0][0] > 0.5 * (end - start) - 1.0, (events[0][0] - start, end - start)
