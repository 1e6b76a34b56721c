"""facekd: distil a face-recognition teacher into a small student, export it, benchmark it."""
__version__ = "0.1.0"
