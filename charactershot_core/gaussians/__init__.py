"""4D Gaussian splatting: the Gaussians and their motion (``model/``), rasterising (``render``, ``_torch_raster``),
fitting them to multi-view videos (``fit`` with ``data``, ``init``, ``trajectory``, ``losses``, ``threads``), file
formats and export (``formats/``), metrics and reports (``evaluation/``), the synthetic character and demo
(``synthetic/``), and the one quaternion/rotation module (``rotations``). docs/code_map.md says what each may
import."""
