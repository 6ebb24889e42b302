"""Gaussian splatting: rendering backends (gsplat / pure torch), metrics, export formats, a synthetic character,
and (in the other modules of this package) the 4D representation and its optimiser."""
