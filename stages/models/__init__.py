"""Model presets: each module gives a Params dataclass, prepare, train, and render_failure."""

from types import ModuleType

from stages.models import digits

MODELS: dict[str, ModuleType] = {"digits_cnn": digits}
