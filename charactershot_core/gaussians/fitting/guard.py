"""The fit's watch for NaN and infinity, and the last good state it falls back to.

Every iteration checks the parameters, the loss and the gradients on the device, without waiting for it (a flag per
iteration); the host reads those flags every ``check_every`` iterations and before each snapshot of the last good
state: on the first bad iteration the fit restores that state and raises :class:`FitDivergedError` (the exact
iteration number and what broke, the state attached).
"""

from __future__ import annotations

import json

import torch

from ...errors import CharacterShotError
from ..model import Gaussians4D
from ..raster.precision import all_finite

BROKE = ("the Gaussian parameters", "the loss", "the gradients")  # what flag codes 1, 2 and 3 mean


class FitDivergedError(CharacterShotError):
    """NaN or infinity appeared during fitting. ``model`` holds the last good state, ``iteration`` where it broke."""

    def __init__(self, iteration: int, what: str, model: Gaussians4D | None, good_iteration: int):
        self.iteration, self.what, self.model, self.good_iteration = iteration, what, model, good_iteration
        super().__init__(f"fitting diverged at iteration {iteration}: {what} became NaN or infinite; the last good "
                         f"state (iteration {good_iteration}) was kept")


class DivergenceGuard:
    """NaN/inf flags of the iterations since the last host check (0 fine, else the index into ``BROKE`` + 1) and
    the snapshot of the last good state of ``model``."""

    def __init__(self, model: Gaussians4D, check_every: int, device):
        self.model = model
        self.check_every = max(1, int(check_every))
        self.flags = torch.zeros(self.check_every, dtype=torch.int8, device=device)
        self.flag_from = 1  # the iteration of flags[0]
        self.good = {"it": 0, "tensors": {k: x.clone() for k, x in model.state_tensors().items()},
                     "config": model.config}

    def restore_good(self) -> Gaussians4D:
        return Gaussians4D.from_tensors(self.good["tensors"], self.good["config"])

    def check(self, upto: int) -> None:
        """Read the flags of iterations flag_from..upto (one host sync); raise FitDivergedError on the first bad."""
        n = upto - self.flag_from + 1
        if n <= 0:
            return
        codes = self.flags[:n].tolist()
        bad = next((k for k, c in enumerate(codes) if c), None)
        if bad is not None:
            raise FitDivergedError(self.flag_from + bad, BROKE[codes[bad] - 1], self.restore_good(), self.good["it"])
        self.flags.zero_()
        self.flag_from = upto + 1

    def flag(self, it: int, ok: torch.Tensor, code: int) -> None:
        """Record ``code`` for iteration ``it`` where ``ok`` (a 0-d bool tensor) is False, unless one is there."""
        slot = self.flags[it - self.flag_from]
        slot.copy_(torch.where((slot == 0) & ~ok, torch.full_like(slot, code), slot))

    def unflag(self, it: int) -> None:
        """Forget iteration ``it``'s flags (it is done again)."""
        self.flags[it - self.flag_from] = 0

    def flag_parameters(self, it: int) -> None:
        self.flag(it, all_finite(list(self.model.parameters())), 1)

    def flag_loss(self, it: int, loss: torch.Tensor) -> None:
        self.flag(it, torch.isfinite(loss.detach()), 2)

    def flag_gradients(self, it: int) -> None:
        self.flag(it, all_finite([p.grad for p in self.model.parameters() if p.grad is not None]), 3)

    def start_iteration(self, it: int) -> None:
        """Read the flags when ``check_every`` iterations are pending, then check the parameters of ``it``."""
        if it - self.flag_from >= self.check_every:
            self.check(it - 1)
        self.flag_parameters(it)

    def snapshot(self, it: int) -> None:
        """Keep the current state as the last good one: only a state whose every iteration was checked, and whose
        parameters are finite now."""
        self.flag_parameters(it)
        self.check(it)
        self.good = {"it": it, "tensors": {k: x.clone() for k, x in self.model.state_tensors().items()},
                     "config": json.loads(json.dumps(self.model.config))}

    def finish(self, it: int) -> None:
        """The last checks after iteration ``it``: raises FitDivergedError (the last good state attached)."""
        if it >= self.flag_from:
            self.flag_parameters(it)
            self.check(it)
        if not self.model.all_finite():
            raise FitDivergedError(it, BROKE[0], self.restore_good(), self.good["it"])
