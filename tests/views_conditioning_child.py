"""Child process of test_orbit_conditioning_is_core_sv3d_with_the_rigs_angles: core's SV3D_Conditioning and
CharacterShotOrbitConditioning run side by side in one ComfyUI (stand-in CLIP vision and VAE), prints a JSON report.

Run in a child because importing ComfyUI's nodes sets global state (and ComfyUI's ``nodes`` module would clash with
the pack's ``nodes`` package on pytest's path)."""

import json
import os
import sys
import tempfile

repo, comfy_dir = sys.argv[1:3]
sys.path.insert(0, comfy_dir)

from comfy.cli_args import args  # noqa: E402

args.cpu = True

import torch  # noqa: E402

import comfy_extras.nodes_stable3d as core3d  # noqa: E402

# the pack as ComfyUI imports it: a package named after its folder
parent = tempfile.mkdtemp()
os.symlink(repo, os.path.join(parent, "charactershot_pack"))
sys.path.insert(0, parent)

from charactershot_pack.charactershot_core import cameras as cam  # noqa: E402
from charactershot_pack.charactershot_core.errors import InputError  # noqa: E402
from charactershot_pack.nodes import views as ours  # noqa: E402


class Embeds:
    def __init__(self, image_embeds):
        self.image_embeds = image_embeds


class StandInClipVision:
    """Deterministic image embedding: per-channel means and a few pixels, padded to 1024."""

    def encode_image(self, image):
        b = image.shape[0]
        feats = torch.cat([image.mean(dim=(1, 2)), image[:, ::97, ::89].reshape(b, -1)], dim=1)
        return Embeds(torch.nn.functional.pad(feats, (0, 1024 - feats.shape[1])))


class StandInVAE:
    """8x downsampling 'encoder' with 4 channels, like SV3D's latent layout."""

    def encode(self, pixels):
        x = pixels.movedim(-1, 1)
        x = torch.nn.functional.avg_pool2d(x, 8)
        return torch.cat([x, x.mean(dim=1, keepdim=True)], dim=1)


image = torch.rand(1, 600, 500, 3)
clip, vae = StandInClipVision(), StandInVAE()
core_out = core3d.SV3D_Conditioning.execute(clip, image, vae, 576, 576, 21, 0.0)
our_out = ours.OrbitConditioning.execute(clip, image, vae)
official = ours.OrbitConditioning.execute(clip, image, vae, frame_order="sv3d_official")
custom = ours.OrbitConditioning.execute(clip, image, vae, cam.orbit_rig(num_views=8, elevation_deg=10.0),
                                        256, 256)


def unpack(out):
    pos, neg, latent = out.result if hasattr(out, "result") else out.args
    return pos[0], neg[0], latent["samples"]


(cp, cpd), (cn, cnd), cl = unpack(core_out)
(op, opd), (on, ond), ol = unpack(our_out)
_, _, cust_latent = unpack(custom)
report = {
    "same_pooled": bool(torch.equal(cp, op)),
    "same_negative": bool(torch.equal(cn, on)),
    "same_concat": bool(torch.equal(cpd["concat_latent_image"], opd["concat_latent_image"])),
    "same_negative_concat": bool(torch.equal(cnd["concat_latent_image"], ond["concat_latent_image"])),
    "same_keys": sorted(cpd) == sorted(opd) and sorted(cnd) == sorted(ond),
    "latent_shapes": [list(cl.shape), list(ol.shape)],
    "core_azimuths": cpd["azimuth"],
    "our_azimuths": opd["azimuth"],
    "our_negative_azimuths": ond["azimuth"],
    "our_elevations": opd["elevation"],
    "official_azimuths": unpack(official)[0][1]["azimuth"],
    "custom_azimuths": unpack(custom)[0][1]["azimuth"],
    "custom_elevations": unpack(custom)[0][1]["elevation"],
    "custom_latent": list(cust_latent.shape),
}
rig = cam.official_rig()
bent = rig.c2w_gl.copy()
bent[4, :3, :3] = bent[4, :3, :3] @ torch.tensor([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]], dtype=torch.float64).numpy()
try:
    ours.OrbitConditioning.execute(clip, image, vae, cam.CameraRig(bent, rig.fx, rig.fy, rig.cx, rig.cy, 720, 480))
    report["non_orbit_error"] = None
except InputError as e:
    report["non_orbit_error"] = str(e)
print(json.dumps(report))
