"""4D Gaussian splatting: the Gaussians and their motion models (``model/``), rasterising (``raster/``), fitting them
to multi-view videos (``fitting/``), file formats and export (``formats/``), metrics and reports (``evaluation/``), the
synthetic character and demo (``synthetic/``), the one quaternion/rotation module (``rotations``) and the 4D commands
(``cli``). docs/code_map.md says what each may import."""
