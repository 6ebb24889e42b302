"""Pose-conditioned sampling: 2D animation and multi-view videos, seed for seed with the official pipelines.

* :mod:`.pipeline`: the denoising loop, VAE passes, official draw order (no models held);
* :mod:`.job`: :class:`MultiViewJob` / :class:`Animate2DJob` (every input), view groups and their keys;
* :mod:`.worker`: :class:`MultiViewWorker` (models + one group at a time), :func:`animate_2d`, :class:`SamplerSpec`;
* :mod:`.store`: finished groups on disk, the saved ``viewXX/frame_XXXXX.png`` layout, the official mp4;
* :mod:`.executor`: :func:`sample_multiview` (reuse, persist, assemble) over an executor (:class:`LocalExecutor`).
"""

from .executor import GroupFailure, LocalExecutor, MultiViewResult, sample_multiview  # noqa: F401
from .job import Animate2DJob, GroupResult, MultiViewJob, assemble  # noqa: F401
from .pipeline import DenoiseOptions, denoise  # noqa: F401
from .schedulers import DYNAMIC_CFG, SCHEDULERS, guidance_at, make_scheduler  # noqa: F401
from .store import GroupStore, read_official_mp4, write_multiview_folder  # noqa: F401
from .worker import MultiViewWorker, SamplerSpec, animate_2d, model_identity  # noqa: F401
