"""Every preset's params (model.* in params.yaml) and their checks, by model.name.

Standard library only (and stages.errors): params.yaml is validated without loading any preset's
code. A check that needs a file (e.g. the encoder's config) runs where the preset first reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stages.errors import require

# where `apt-get install dataset-fashion-mnist` puts Fashion-MNIST
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
SENTIMENTS = ["rotten", "fresh"]  # minilm_sentiment's classes: label 0, label 1


def check_low_light(scale: float, gamma: float) -> None:
    """The image presets' low_light parameters (ParamsError naming the field)."""
    require(0 < scale <= 1, "low_light_scale", scale, "in (0, 1]")
    require(gamma > 0, "low_light_gamma", gamma, "> 0")


def check_split(validation_share: float, calibration_size: int) -> None:
    """A validation share of all rows and a calibration count (ParamsError naming the field)."""
    require(0 < validation_share < 0.9, "validation_share", validation_share, "in (0, 0.9)")
    require(calibration_size >= 1, "calibration_size", calibration_size, ">= 1")


def _check_cnn(p: DigitsParams | FashionParams) -> None:
    """The image presets' network and training fields."""
    check_low_light(p.low_light_scale, p.low_light_gamma)
    require(len(p.channels) == 2, "channels", p.channels, "two conv widths")
    require(min([*p.channels, p.hidden]) >= 1, "channels", p.channels, "widths >= 1")
    require(p.epochs >= 1, "epochs", p.epochs, ">= 1")
    require(p.batch_size >= 1, "batch_size", p.batch_size, ">= 1")
    require(p.learning_rate > 0, "learning_rate", p.learning_rate, "> 0")
    require(p.parity_tolerance > 0, "parity_tolerance", p.parity_tolerance, "> 0")


@dataclass
class DigitsParams:
    validation_share: float = 0.25
    calibration_size: int = 128
    low_light_scale: float = 0.3
    low_light_gamma: float = 1.5
    channels: list[int] = field(default_factory=lambda: [16, 32])
    hidden: int = 64
    epochs: int = 25
    batch_size: int = 64
    learning_rate: float = 0.003
    parity_tolerance: float = 1e-4

    def __post_init__(self) -> None:
        check_split(self.validation_share, self.calibration_size)
        _check_cnn(self)


@dataclass
class FashionParams:
    data_dir: str = FASHION_DIR  # the four original .gz IDX files
    max_train_rows: int = (
        0  # rows of the official training file used (train + calibration); 0 = all
    )
    max_validation_rows: int = 0  # rows of the official test file used as validation; 0 = all
    calibration_size: int = 512  # held out of the training file for static-quantization calibration
    low_light_scale: float = 0.3
    low_light_gamma: float = 1.5
    channels: list[int] = field(default_factory=lambda: [32, 64])
    hidden: int = 128
    epochs: int = 2
    batch_size: int = 64
    learning_rate: float = 0.002
    parity_tolerance: float = 1e-4

    def __post_init__(self) -> None:
        require(bool(self.data_dir), "data_dir", self.data_dir, "a folder path")
        require(self.calibration_size >= 10, "calibration_size", self.calibration_size, ">= 10")
        require(
            self.max_train_rows == 0 or self.max_train_rows >= self.calibration_size + 10,
            "max_train_rows",
            self.max_train_rows,
            f"0 (all) or >= calibration_size + 10 = {self.calibration_size + 10}",
        )
        require(
            self.max_validation_rows == 0 or self.max_validation_rows >= 10,
            "max_validation_rows",
            self.max_validation_rows,
            "0 (all) or >= 10 (one per class)",
        )
        _check_cnn(self)


@dataclass
class MiniLMParams:
    model_dir: str = ""  # a local Hugging Face model directory; "" = the one in the package
    layers: int = 0  # encoder layers kept (the first ones); 0 = all
    max_length: int = 128  # tokens per row, with [CLS] and [SEP]; longer snippets are cut
    validation_share: float = 0.25
    calibration_size: int = 128
    max_rows: int = 0  # a stratified sample of the snippets; 0 = all
    short_tokens: int = 12  # `short` slice: at most this many real tokens
    long_tokens: int = 40  # `long` slice: at least this many
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 0.001
    parity_tolerance: float = 1e-3

    def __post_init__(self) -> None:
        require(self.layers >= 0, "layers", self.layers, ">= 0 (0 = all)")
        require(2 <= self.max_length <= 512, "max_length", self.max_length, "in [2, 512]")
        check_split(self.validation_share, self.calibration_size)
        require(self.max_rows >= 0, "max_rows", self.max_rows, ">= 0 (0 = all)")
        if self.max_rows:
            train = self.max_rows - round(self.max_rows * self.validation_share)
            least = (self.calibration_size + 2 * len(SENTIMENTS)) / (1 - self.validation_share)
            require(
                train - self.calibration_size >= 2 * len(SENTIMENTS),
                "max_rows",
                self.max_rows,
                f"enough rows to train on after validation and calibration (>= "
                f"{least:.0f} here), or 0 for all",
            )
        require(self.short_tokens >= 1, "short_tokens", self.short_tokens, ">= 1")
        require(
            self.short_tokens < self.long_tokens <= self.max_length,
            "long_tokens",
            self.long_tokens,
            f"in ({self.short_tokens}, {self.max_length}] (above short_tokens, up to max_length)",
        )
        require(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        require(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        require(self.learning_rate > 0, "learning_rate", self.learning_rate, "> 0")
        require(self.parity_tolerance > 0, "parity_tolerance", self.parity_tolerance, "> 0")


@dataclass
class OnnxFileParams:
    path: str = ""  # the .onnx file (absolute, or relative to the repository root)
    data: str = ""  # the labelled .npz
    calibration_share: float = 0.2  # share of the .npz rows held out for calibration (seeded)
    class_names: list[str] = field(default_factory=list)  # default: "0".."K-1"
    label_output: str = ""  # the output the labels index (its argmax is the prediction); "" = first

    def __post_init__(self) -> None:
        require(bool(self.path), "path", self.path, "the path of your .onnx model")
        require(bool(self.data), "data", self.data, "the path of your labelled .npz")
        require(
            0 < self.calibration_share < 1,
            "calibration_share",
            self.calibration_share,
            "a share in (0, 1)",
        )
        require(
            all(isinstance(c, str) and c for c in self.class_names),
            "class_names",
            self.class_names,
            "non-empty strings",
        )
        require(
            len(set(self.class_names)) == len(self.class_names),
            "class_names",
            self.class_names,
            "distinct names",
        )


PARAMS: dict[str, type] = {
    "digits_cnn": DigitsParams,
    "fashion_cnn": FashionParams,
    "minilm_sentiment": MiniLMParams,
    "onnx_file": OnnxFileParams,
}
