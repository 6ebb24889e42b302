"""The synthetic character: a procedural, articulated character as exact ground-truth Gaussians (``character``) and
the bundled demo that fits it with the user's commands (``demo``).

Test and demo material only: fitting, rendering and formats never import this package. It may import
``..rotations``, ``..render`` (to draw the character), ``..model`` (colour constants) and, for the demo, the CLI.
"""

from .character import DEFAULT_MOTION, MOTIONS, TURN_DEGREES, SyntheticCharacter, SyntheticModel  # noqa: F401

__all__ = ["SyntheticCharacter", "SyntheticModel", "MOTIONS", "DEFAULT_MOTION", "TURN_DEGREES"]
