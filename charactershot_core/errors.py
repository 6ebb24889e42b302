"""Errors raised by the core library.

Every message names the input that was wrong and what was expected, because ComfyUI shows it to an artist as is.
"""


class CharacterShotError(Exception):
    """Base class of every error the pack raises on purpose."""


class InputError(CharacterShotError, ValueError):
    """A user-supplied input is not what was expected.

    ``InputError("pose_frames", "expected at least 1 frame, got 0")`` reads
    ``pose_frames: expected at least 1 frame, got 0``.
    """

    def __init__(self, name: str, message: str):
        self.input_name = name
        self.detail = message
        super().__init__(f"{name}: {message}")


class CheckpointError(CharacterShotError, ValueError):
    """A checkpoint file or folder cannot be loaded as the requested model."""
