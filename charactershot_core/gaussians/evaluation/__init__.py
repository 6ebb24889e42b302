"""How good is a fit: image metrics (PSNR, the one SSIM, character boxes, motion ratios; ``metrics``) and the report a
fit gives on its own training views (``report``).

``metrics`` imports only torch/numpy and ``charactershot_core.errors`` (the fit's D-SSIM loss imports its
``ssim_map``); ``report`` also renders through ``..fit.render_views``.
"""
