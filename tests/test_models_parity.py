"""Parity with the official CharacterShot models (fixtures made by the official code with tiny random weights).

Every fixture folder under CHARSHOT_PARITY_DIR (default ../shared/parity) is compared; every size and config comes
from its config.json.  Weights are the official-key safetensors loaded strictly into our classes (only the unused
``patch_embed.pos_embedding`` is dropped); float32 on CPU; max abs difference <= 1e-4.
"""

from __future__ import annotations

import pytest
import torch

from charactershot_core.models import CameraGuider, CharacterShotTransformer4D, Transformer4DConfig, camera_tokens
from tests.parity_utils import fixture_names, load_fixture, max_abs_diff, parity_root, without_pos_embedding

TOL = 1e-4
COMPARED = ("camera_guider_out", "transformer4d_out")


def _params():
    names = fixture_names()
    if not names:
        return [pytest.param("<none>", t, id=f"no-fixtures-{t}") for t in COMPARED]
    return [(n, t) for n in names for t in COMPARED]


def _camera_guider(fx):
    guider = CameraGuider(out_dim=int(fx.config["camera_guider"]["out_dim"]))
    guider.load_state_dict(fx.weights("camera_guider"), strict=True)
    return guider.eval()


def _run(fx, tensor: str) -> torch.Tensor:
    with torch.no_grad():
        guider_out = _camera_guider(fx)(fx.input_tensor("camera_maps").float())
        if tensor == "camera_guider_out":
            return guider_out
        if tensor == "transformer4d_out":
            cfg = Transformer4DConfig.from_dict(fx.config["transformer4d_config"])
            model = CharacterShotTransformer4D(cfg).eval()
            model.load_state_dict(without_pos_embedding(fx.weights("transformer4d")), strict=True)
            hidden = fx.input_tensor("transformer_hidden").float()
            b, v, f, _, h, w = hidden.shape
            assert v == fx.config["views"], "transformer_hidden's view count differs from config.json 'views'"
            latent_frames = (fx.config["num_frames"] - 1) // 4 + 1
            assert f == latent_frames + 1, "transformer_hidden should hold L+1 frames (reference frame first)"
            tokens = camera_tokens(guider_out)[None].expand(b, -1, -1, -1)
            p = cfg.patch_size
            image_rope, view_rope = model.rotary_embeddings(f, v, h // p, w // p)
            return model(hidden, fx.input_tensor("transformer_text").float(), fx.input_tensor("transformer_timestep"),
                         tokens, image_rope, view_rope, per_sample_text=False)
    raise AssertionError(f"no comparison defined for {tensor}")


@pytest.mark.parametrize("folder,tensor", _params())
def test_parity(folder, tensor):
    if folder == "<none>":
        pytest.skip(f"no parity fixture folders found under {parity_root()} (set CHARSHOT_PARITY_DIR)")
    fx = load_fixture(folder)
    expected = fx.expected_tensor(tensor)  # a listed tensor that is absent fails here
    got = _run(fx, tensor)
    diff = max_abs_diff(got, expected)
    assert diff <= TOL, f"{fx.name}/{tensor}: max abs diff {diff:.3g} > {TOL} (expected magnitude " \
                        f"{expected.abs().max().item():.3g})"


def test_parity_text_quirk_matters():
    """The fixture pins the faithful text copies: the per-sample fix must give a different result on it."""
    names = fixture_names()
    if not names:
        pytest.skip(f"no parity fixture folders found under {parity_root()}")
    fx = load_fixture(names[0])
    cfg = Transformer4DConfig.from_dict(fx.config["transformer4d_config"])
    model = CharacterShotTransformer4D(cfg).eval()
    model.load_state_dict(without_pos_embedding(fx.weights("transformer4d")), strict=True)
    with torch.no_grad():
        tokens = camera_tokens(_camera_guider(fx)(fx.input_tensor("camera_maps").float()))
        hidden = fx.input_tensor("transformer_hidden").float()
        tokens = tokens[None].expand(hidden.shape[0], -1, -1, -1)
        args = (hidden, fx.input_tensor("transformer_text").float(), fx.input_tensor("transformer_timestep"), tokens)
        faithful = model(*args, per_sample_text=False)
        fixed = model(*args, per_sample_text=True)
    expected = fx.expected_tensor("transformer4d_out")
    assert max_abs_diff(faithful, expected) <= TOL
    # batch element 0 is identical in both modes; element 1 (positive prompt) differs
    assert max_abs_diff(faithful[0], fixed[0]) <= 1e-6
    assert max_abs_diff(fixed[1], expected[1]) > 0
