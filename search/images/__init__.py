"""Moved to xmodal.search.media.images: this stand-in is kept only while search/engine.py
imports from here. A package rather than a module, so that git sees search/images.py as
moved (history and blame follow). Delete it when engine.py imports xmodal.search.media.
"""

from xmodal.search.media.images import ImageLimits, decode_image

__all__ = ["ImageLimits", "decode_image"]
