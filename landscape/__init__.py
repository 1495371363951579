"""landscape: loss-landscape analysis for deep learning."""

from landscape.errors import LandscapeError

__all__ = ["LandscapeError"]
__version__ = "0.1.0"
