"""The model presets by model.name."""

from stages.models import digits, fashion, minilm, onnx_file
from stages.models.preset import Preset

MODELS: dict[str, Preset] = {
    "digits_cnn": digits.PRESET,
    "fashion_cnn": fashion.PRESET,
    "minilm_sentiment": minilm.PRESET,
    "onnx_file": onnx_file.PRESET,
}
