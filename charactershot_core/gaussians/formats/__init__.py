"""File formats and export: one module per format (``ply``, ``spz``, ``splatv``, ``bundle`` (.cs4d), ``html``), their
shared helpers (``common``) and the driver that writes a chosen set (``export``).

Imports: ``..model`` (constants), ``..rotations`` and ``charactershot_core.errors``; models are read through their
``baked(t)`` interface only. The public names are re-exported here (``from charactershot_core.gaussians import
formats; formats.export_formats(...)``).
"""

from .bundle import BUNDLE_MAGIC, BUNDLE_VERSION, bundle_meta, read_bundle, write_bundle, write_model_bundle
from .common import SH_C0, atomic_write_bytes, rgb_to_sh0, sh0_to_rgb
from .export import DEFAULT_FORMATS, FORMATS, export_formats, parse_formats, summary_text
from .html import html_bytes
from .ply import is_supersplat_sequence, ply_bytes, read_ply, write_ply
from .splatv import fit_motion, read_splatv, splatv_bytes, splatv_cameras, splatv_state
from .spz import SPZ_VERSION, read_spz, spz_bytes, write_spz

__all__ = ["FORMATS", "DEFAULT_FORMATS", "SPZ_VERSION", "BUNDLE_MAGIC", "BUNDLE_VERSION", "SH_C0", "parse_formats",
           "is_supersplat_sequence", "ply_bytes", "write_ply", "read_ply", "spz_bytes", "write_spz", "read_spz",
           "fit_motion", "splatv_bytes", "read_splatv", "splatv_state", "splatv_cameras", "html_bytes",
           "write_bundle", "read_bundle", "write_model_bundle", "bundle_meta", "export_formats", "summary_text",
           "atomic_write_bytes", "rgb_to_sh0", "sh0_to_rgb"]
