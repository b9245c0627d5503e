"""onnx_file on inputs as third-party exports and hand-made .npz files write them: unknown axes
spelt -1, 0, "" or "?", non-finite values, misspelt slice masks, and image-shaped failures."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from PIL import Image

from stages.data import LABELS, MASK_PREFIX
from stages.models import onnx_file, onnx_file_model, onnx_file_render
from stages.models.options import OnnxFileParams
from stages.params import ParamsError
from stages.storage import EvidenceError, save_arrays

CLEAR = (ParamsError, EvidenceError)
N = 20


def _dims(value: onnx.ValueInfoProto, dims: list[int | str]) -> onnx.ValueInfoProto:
    """Write each axis as given: an int as dim_value (even -1 or 0), a str as dim_param."""
    shape = value.type.tensor_type.shape
    shape.ClearField("dim")
    for d in dims:
        if isinstance(d, int):
            shape.dim.add().dim_value = d
        else:
            shape.dim.add().dim_param = d
    return value


def _pooled_model(path: Path, dims: list[int | str]) -> Path:
    """x [N, 1, H, W] -> (mean, -mean) as [N, 2] scores; any H and W run."""
    x = _dims(helper.make_tensor_value_info("x", TensorProto.FLOAT, None), dims)
    scores = _dims(helper.make_tensor_value_info("scores", TensorProto.FLOAT, None), [-1, 2])
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),  # [N, 1]
        helper.make_node("Neg", ["m"], ["n"]),
        helper.make_node("Concat", ["m", "n"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(nodes, "pooled", [x], [scores])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _npz(tmp_path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path = tmp_path / "data.npz"
    save_arrays(path, arrays)
    return path


def _images(h: int = 5, w: int = 7) -> dict[str, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((N, 1, h, w)).astype(np.float32)
    return {"x": x, LABELS: (np.arange(N) % 2).astype(np.int64)}


def _params(model: Path, data: Path) -> OnnxFileParams:
    return OnnxFileParams(path=str(model), data=str(data), calibration_share=0.25)


# --- 1. unknown axes ----------------------------------------------------------------------------


def test_unknown_dim_spellings_are_free_axes() -> None:
    value = _dims(
        helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
        [-1, 0, "", "?", "unk", "None", "unknown", "-1", "batch_size", 3],
    )

    got = onnx_file_model.tensor(value).dims

    assert got == [None] * 8 + ["batch_size", 3]


@pytest.mark.parametrize("batch", [-1, "", "unk"])
def test_unknown_batch_and_two_question_mark_axes_run(tmp_path: Path, batch: int | str) -> None:
    model = _pooled_model(tmp_path / "m.onnx", [batch, 1, "?", "?"])
    arrays = _images(h=5, w=7)  # two "?" axes of different real sizes

    data = onnx_file.prepare(_params(model, _npz(tmp_path, arrays)), seed=0)

    assert data.info["input_shapes"] == {"x": "[?, 1, ?, ?]"}
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (scores,) = sess.run(None, data.feeds("validation"))
    assert scores.shape == (15, 2) and data.class_names == ["0", "1"]


def test_a_repeated_real_name_is_settled_by_the_session(tmp_path: Path) -> None:
    # the export names both spatial axes "side", yet the graph runs on any H and W: accepted
    model = _pooled_model(tmp_path / "m.onnx", ["batch", 1, "side", "side"])

    data = onnx_file.prepare(_params(model, _npz(tmp_path, _images(h=5, w=7))), seed=0)

    assert data.feeds("validation")["x"].shape == (15, 1, 5, 7)


def test_a_zero_batch_that_onnxruntime_holds_fixed_gets_the_fix(tmp_path: Path) -> None:
    # dim_value 0 means "unknown" to some exporters, but onnxruntime holds it at size 0
    model = _pooled_model(tmp_path / "m.onnx", [0, 1, "?", "?"])

    with pytest.raises(EvidenceError) as e:
        onnx_file.prepare(_params(model, _npz(tmp_path, _images())), seed=0)

    message = str(e.value)
    assert "onnxruntime holds axis 0 of input 'x' at a fixed size 0" in message
    assert "model.data has 20 there" in message
    fix = message.split("free it in the file: ", 1)[1].replace("path", repr(str(model)))
    exec(fix, {"onnx": onnx})  # the fix as printed works
    assert onnx_file.prepare(_params(model, _npz(tmp_path, _images())), seed=0).inputs == ["x"]


def test_a_positive_fixed_batch_is_still_refused(tmp_path: Path) -> None:
    model = _pooled_model(tmp_path / "m.onnx", [1, 1, "?", "?"])

    with pytest.raises(CLEAR, match=r"fixed batch size of 1 .*dynamic first axis"):
        onnx_file.prepare(_params(model, _npz(tmp_path, _images())), seed=0)


# --- 2. non-finite values -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused_with_their_rows(tmp_path: Path, bad: float) -> None:
    model = _pooled_model(tmp_path / "m.onnx", [-1, 1, "?", "?"])
    arrays = _images()
    for row in (3, 7, 8, 9, 11, 12):
        arrays["x"][row, 0, 1, 2] = bad

    with pytest.raises(ParamsError) as e:
        onnx_file.prepare(_params(model, _npz(tmp_path, arrays)), seed=0)

    message = str(e.value)
    assert "model.data = " in message and "input 'x' holds NaN or infinite values" in message
    assert "in 6 of 20 rows (rows 3, 7, 8, 9, 11, ... of the .npz)" in message
    assert "drop those rows" in message


# --- 3. arrays the pipeline would not use -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fix"),
    [("slice_dark", "slice__dark"), ("Slice__dark", "slice__dark"), ("slices", "slice__s")],
)
def test_a_near_miss_mask_name_is_an_error(tmp_path: Path, name: str, fix: str) -> None:
    model = _pooled_model(tmp_path / "m.onnx", [-1, 1, "?", "?"])
    arrays = {**_images(), name: np.arange(N) % 3 == 0}

    with pytest.raises(ParamsError) as e:
        onnx_file.prepare(_params(model, _npz(tmp_path, arrays)), seed=0)

    message = str(e.value)
    assert f"array {name!r} looks like a slice mask" in message
    assert f"named {MASK_PREFIX!r}" in message and f"rename it to {fix!r}" in message


def test_a_boolean_column_without_the_prefix_is_an_error(tmp_path: Path) -> None:
    model = _pooled_model(tmp_path / "m.onnx", [-1, 1, "?", "?"])
    arrays = {**_images(), "dark": np.arange(N) % 3 == 0}

    with pytest.raises(ParamsError, match=r"array 'dark' is a boolean flag per row.*'slice__dark'"):
        onnx_file.prepare(_params(model, _npz(tmp_path, arrays)), seed=0)


def test_masks_and_extra_columns_still_work(tmp_path: Path) -> None:
    model = _pooled_model(tmp_path / "m.onnx", [-1, 1, "?", "?"])
    arrays = {
        **_images(),
        MASK_PREFIX + "dark": np.arange(N) % 3 == 0,
        "source_id": np.arange(N, dtype=np.int64) * 10,  # an extra column, shown with failures
    }

    data = onnx_file.prepare(_params(model, _npz(tmp_path, arrays)), seed=0)

    assert data.slices[0].name == "dark"
    assert data.info["extra_columns"] == ["source_id"]
    val = data.sets["validation"]
    assert np.array_equal(val["source_id"], val[onnx_file.ROW] * 10)


# --- 4. failure renderings ----------------------------------------------------------------------


def _row(**arrays: np.ndarray) -> dict[str, np.ndarray]:
    """One failing row as validate passes it: each array a batch of one, plus scalar columns."""
    return {
        **{k: v[None] for k, v in arrays.items()},
        LABELS: np.array([1]),
        onnx_file.ROW: np.array([17]),
        MASK_PREFIX + "dark": np.array([True]),
    }


def test_a_one_channel_image_renders_as_a_png() -> None:
    x = np.linspace(-3, 5, 64, dtype=np.float32).reshape(1, 8, 8)

    suffix, content = onnx_file_render.render_failure(_row(x=x))

    assert suffix == ".png"
    img = Image.open(io.BytesIO(content))
    assert img.size == (112, 112) and img.mode == "L"  # 8 px scaled 14x, nearest neighbour
    pixels = np.asarray(img)
    assert pixels.min() == 0 and pixels.max() == 255  # the row's own min..max
    assert img.text[onnx_file.ROW] == "17" and img.text[LABELS] == "1"


def test_colour_and_plain_2d_images_render_as_pngs() -> None:
    rgb = np.random.default_rng(0).random((3, 10, 20)).astype(np.float32)
    suffix, content = onnx_file_render.render_failure(_row(x=rgb))
    img = Image.open(io.BytesIO(content))
    assert suffix == ".png" and img.mode == "RGB" and img.size == (120, 60)  # 6x: 20 -> 120

    gray = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    suffix, content = onnx_file_render.render_failure(_row(x=gray))
    assert suffix == ".png" and Image.open(io.BytesIO(content)).size == (112, 112)


def test_feature_vectors_render_as_a_table() -> None:
    features = np.arange(16, dtype=np.float32)

    suffix, content = onnx_file_render.render_failure(_row(features=features))

    assert suffix == ".md"
    assert b"| features | float32 | [16] |" in content and b"| npz_row | int64 | [] | 17" in content


def test_an_image_beside_a_feature_vector_keeps_the_table() -> None:
    row = _row(x=np.zeros((1, 8, 8), np.float32), meta=np.arange(5, dtype=np.float32))

    suffix, _ = onnx_file_render.render_failure(row)

    assert suffix == ".md"  # one PNG cannot show the vector: the table shows both
