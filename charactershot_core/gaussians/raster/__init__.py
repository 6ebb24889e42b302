"""Rasterising Gaussians: the backend choice and gsplat's fallback (``render``), the pure-torch rasteriser
(``_torch_raster``), the accumulation precision per device (``precision``), and rendering a model or a rig's views
(``views``)."""
