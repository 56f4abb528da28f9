"""Media: the kinds of media (kinds.py) and all their decoding, for indexing and queries.

Images decode with Pillow (images.py); videos (video.py) and sound (audio.py) with
PyAV, through what they share (av.py). The indexer, query uploads and the API's
thumbnails all decode here, so that the same file gives the same pixels and samples.
"""

from .audio import (
    AudioDecodeStats,
    AudioInfo,
    AudioOptions,
    AudioWindow,
    iter_audio_windows,
    probe_audio,
    resample_mono,
)
from .files import file_type_name, open_regular, over_cap, read_capped
from .images import DecodedImage, ImageLimits, decode_image
from .kinds import KINDS, SNIFF_BYTES, KindSpec, MediaKind, kinds_in_space, media_kind, sniff_kind
from .video import (
    Keyframe,
    KeyframeSettings,
    VideoKeyframes,
    VideoSettings,
    extract_keyframes,
    frame_at,
)

__all__ = [
    "KINDS",
    "SNIFF_BYTES",
    "AudioDecodeStats",
    "AudioInfo",
    "AudioOptions",
    "AudioWindow",
    "DecodedImage",
    "ImageLimits",
    "Keyframe",
    "KeyframeSettings",
    "KindSpec",
    "MediaKind",
    "VideoKeyframes",
    "VideoSettings",
    "decode_image",
    "extract_keyframes",
    "file_type_name",
    "frame_at",
    "iter_audio_windows",
    "kinds_in_space",
    "media_kind",
    "open_regular",
    "over_cap",
    "probe_audio",
    "read_capped",
    "resample_mono",
    "sniff_kind",
]
