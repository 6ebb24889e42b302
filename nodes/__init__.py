"""ComfyUI adapter: thin V3 nodes over ``charactershot_core``."""

from comfy_api.latest import ComfyExtension, io

from ..charactershot_core.opencv import warn_at_load
from . import cameras, gaussians, models, prepare, preview, sampling, views
from . import splat

warn_at_load()  # OpenCV missing or installed twice: say so in the server log, once


def all_nodes() -> list[type[io.ComfyNode]]:
    return [*cameras.NODES, *prepare.NODES, *models.NODES, *sampling.NODES, *gaussians.NODES, *preview.NODES,
            *views.NODES, *splat.NODES]


class CharacterShotExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return all_nodes()


async def comfy_entrypoint() -> CharacterShotExtension:
    import folder_paths

    from ..charactershot_core.samples import install_samples

    # the templates' sample inputs, into input/ as charactershot_sample_* (never overwritten; ComfyUI 0.3.75 calls no
    # ComfyExtension.on_load, so this happens here, when the pack loads)
    install_samples(folder_paths.get_input_directory())
    return CharacterShotExtension()
