"""Model presets: each module gives a Params dataclass, prepare, train, and render_failure."""

from types import ModuleType

from stages.models import digits, fashion, minilm, onnx_file

MODELS: dict[str, ModuleType] = {
    "digits_cnn": digits,
    "fashion_cnn": fashion,
    "minilm_sentiment": minilm,
    "onnx_file": onnx_file,
}
