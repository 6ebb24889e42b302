"""Tiny inputs for the distributed tests: a tiny checkpoint set (no T5: text embeddings from a file), 9 views of
64x96 on a 9-camera orbit (two view groups of 5), 5 pose frames, 2 steps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

STEPS, FRAMES, VIEWS = 2, 5, 9


def make_inputs(root: Path, characters: int = 1) -> dict:
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from charactershot_core.cameras import orbit_rig
    from charactershot_core.models.tiny import make_tiny_set

    root = Path(root)
    ts = make_tiny_set(str(root / "models"), views=VIEWS, with_t5=False)
    rng = np.random.default_rng(0)
    chars = []
    for c in range(characters):
        d = root / f"char{c}"
        (d / "views").mkdir(parents=True)
        (d / "poses").mkdir()
        for k in range(VIEWS):
            Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(d / "views" / f"view{k}.png")
        for k in range(FRAMES):
            Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(d / "poses" / f"{k}.png")
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(d / "ref_pose.png")
        chars.append(d)
    orbit_rig(VIEWS).resized(96, 64).save(str(root / "cameras.json"))
    g = torch.Generator().manual_seed(0)
    save_file({"prompt_embeds": torch.randn(1, 16, 32, generator=g),
               "negative_prompt_embeds": torch.randn(1, 16, 32, generator=g)}, str(root / "text.safetensors"))
    return {"root": root, "model": ts.official, "chars": chars, "cameras": str(root / "cameras.json"),
            "text": str(root / "text.safetensors")}


def sample_argv(inp: dict, char: int = 0, seed: int = 42, out: str = "out") -> list:
    d = inp["chars"][char]
    return ["sample", "--views", str(d / "views"), "--poses", str(d / "poses"), "--reference-pose",
            str(d / "ref_pose.png"), "--cameras", inp["cameras"], "--model", inp["model"], "--text", inp["text"],
            "--num-frames", str(FRAMES), "--steps", str(STEPS), "--seed", str(seed), "--out", out, "--quiet"]


def make_job(inp: dict, char: int = 0, seed: int = 42):
    """(MultiViewJob, SamplerSpec) of character ``char`` through the sample CLI's own functions."""
    from charactershot_core.__main__ import build_parser
    from charactershot_core.sampling.cli import _spec, build_job

    args = build_parser().parse_args(sample_argv(inp, char, seed))
    return build_job(args), _spec(args)


def write_jobs(path: Path, inp: dict, characters: list, fit=None) -> Path:
    """A batch jobs file: ``characters`` is a list of dicts (name, seed, out, char index)."""
    doc = {"model": inp["model"], "text": inp["text"],
           "defaults": {"steps": STEPS, "num_frames": FRAMES, "cameras": inp["cameras"]},
           "characters": []}
    if fit is not None:
        doc["fit"] = fit
    for c in characters:
        d = inp["chars"][c.get("char", 0)]
        entry = {"name": c["name"], "views": str(d / "views"), "poses": str(d / "poses"),
                 "reference_pose": str(d / "ref_pose.png"), "seed": c.get("seed", 42), "out": c["out"]}
        if "fit" in c:
            entry["fit"] = c["fit"]
        doc["characters"].append(entry)
    path.write_text(json.dumps(doc, indent=1))
    return path


def equal_results(a, b) -> bool:
    import torch

    return (set(a.results) == set(b.results) and torch.equal(a.frames, b.frames)
            and all(torch.equal(a.results[i].latents, b.results[i].latents) for i in a.results))


__all__ = ["make_inputs", "make_job", "sample_argv", "write_jobs", "equal_results", "STEPS", "FRAMES", "VIEWS",
           "os"]
