"""facekd: distil a face-recognition teacher into a small student, export it, benchmark it.

``facekd.load``, ``facekd.train`` and ``facekd.bench`` are the Python API (``facekd/api.py``); importing
``facekd`` alone loads none of the libraries they use.
"""
__version__ = "0.1.0"
__all__ = ["FaceModel", "bench", "load", "train"]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'facekd' has no attribute {name!r}")
