"""Moved to xmodal.search.media.audio: this stand-in is kept only while search/engine.py
imports from here. A package rather than a module, so that git sees search/audio.py as
moved (history and blame follow). Delete it when engine.py imports xmodal.search.media.
"""

from xmodal.search.media.audio import AudioOptions, iter_audio_windows

__all__ = ["AudioOptions", "iter_audio_windows"]
