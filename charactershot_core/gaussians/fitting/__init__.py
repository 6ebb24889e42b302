"""Fitting 4D Gaussians to multi-view videos: the multi-view video input (``data``), the visual-hull initialisation
(``init``), the training loop and its configuration (``fit``), one schedule per motion model (``schedules``), the
NaN/inf checks and the last good state (``guard``), the trajectory table's optical-flow start and per-frame optimiser
(``trajectory``), the losses and the neighbour graph (``losses``), views like a video model's (``robust`` with
``background``, ``appearance``, ``camera_refine``) and the CPU thread choice while fitting or rendering
(``threads``). Renders go through ``raster``."""
