"""finegym-ray: the FineGym dataset turned into trained models at cluster scale, on Ray.

From Python (a notebook, a script): ``import finegym_ray.api as fgr; fgr.train(...)``
(``finegym_ray/api.py``, docs/api.md)."""

__version__ = "0.1.0"
