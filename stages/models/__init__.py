"""Model presets: each module gives a Params dataclass, prepare, train, and render_failure."""

from types import ModuleType

from stages.models import digits, fashion, onnx_file

MODELS: dict[str, ModuleType] = {
    "digits_cnn": digits,
    "fashion_cnn": fashion,
    "onnx_file": onnx_file,
}
