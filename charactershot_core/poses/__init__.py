"""2D poses: POSE_KEYPOINT parsing, DWPose-style drawing, retargeting and resampling (no ComfyUI imports).

Submodules: ``keypoints`` (the Pose type, POSE_KEYPOINT parsing), ``draw`` (the official DWPose drawing),
``retarget`` (the official linear fit, letterboxing, frame-count resampling). The function ``retarget.retarget``
is not re-exported here, so ``poses.retarget`` always names the module.
"""

from .draw import draw_pose, draw_sequence  # noqa: F401
from .keypoints import Pose, PoseSequence, parse_pose_keypoints, to_pose_keypoint  # noqa: F401
from .retarget import (check_frame_count, fit_into_canvas, fit_retarget, resample_indices,  # noqa: F401
                       resample_poses)
