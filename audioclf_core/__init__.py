"""audioclf core: pure audio and ML, no orchestration, no sound card, no CLI.

Importing this package is cheap: TensorFlow is loaded only when a model is.
"""

from .errors import AudioClfError, BundleError, DecodeError, OutputError, ParameterError
from .params import ChannelMode, FeatureParams, SilenceParams

__all__ = [
    "AudioClfError",
    "BundleError",
    "ChannelMode",
    "DecodeError",
    "FeatureParams",
    "OutputError",
    "ParameterError",
    "SilenceParams",
]
