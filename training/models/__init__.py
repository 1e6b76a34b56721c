"""Student architectures."""
from .mobilefacenet import MobileFaceNet, build_student

__all__ = ["MobileFaceNet", "build_student"]
