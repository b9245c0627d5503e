"""Tests for the fashion_cnn and onnx_file model presets, on tiny data made in tmp_path.

fashion_cnn reads fake Fashion-MNIST IDX files written here (so the Debian package is not needed);
onnx_file gets a tiny exported classifier and an .npz, then every kind of bad input.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from stages.data import LABELS, MASK_PREFIX, Prepared
from stages.export import export, parity
from stages.models import fashion, onnx_file, onnx_file_render
from stages.models.options import FashionParams, OnnxFileParams
from stages.params import ParamsError
from stages.storage import EvidenceError, save_arrays, sha256_arrays
from stages.techniques.base import NotApplicable

CLEAR = (ParamsError, EvidenceError)  # the errors a stage prints as one line, no traceback


def _fingerprint(data: Prepared) -> dict[str, str]:
    return {name: sha256_arrays(arrays) for name, arrays in data.sets.items()}


# --- fashion_cnn ------------------------------------------------------------------------------


def write_idx(path: Path, arr: np.ndarray) -> None:
    """uint8 array -> gzipped IDX (magic 0 0 0x08 ndim, big-endian uint32 dims, data)."""
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes())


def _fake_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noise with a bright bar whose row depends on the class: learnable in one epoch."""
    y = np.arange(n) % 10
    rng.shuffle(y)
    x = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(y):
        x[i, 2 + 2 * c : 4 + 2 * c, 4:24] = 250
    return x, y.astype(np.uint8)


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 300), ("t10k", 100)):
        x, y = _fake_images(n, rng)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return folder


def _fashion_params(folder: Path, **kw: Any) -> FashionParams:
    small = {"calibration_size": 50, "channels": [4, 8], "hidden": 16, "epochs": 1}
    return FashionParams(data_dir=str(folder), **{**small, **kw})


def test_read_idx_round_trip(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    got = fashion.read_idx(tmp_path / "a.gz")
    assert got.dtype == np.uint8 and np.array_equal(got, arr)


def test_fashion_prepare_splits_and_slices(fashion_dir: Path) -> None:
    p = _fashion_params(fashion_dir)
    data = fashion.prepare(p, seed=0)
    rows = {k: len(v[LABELS]) for k, v in data.sets.items()}
    assert rows == {"train": 250, "calibration": 50, "validation": 100, "low_light": 100}
    assert data.inputs == ["image"]
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    x = data.sets["validation"]["image"]
    assert x.shape == (100, 1, 28, 28) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert np.bincount(data.labels("calibration"), minlength=10).tolist() == [5] * 10  # stratified
    names = [s.name for s in data.slices]
    assert names[:2] == ["class_tshirt_top", "class_trouser"] and names[-1] == "low_light"
    assert len(names) == 11
    for s in data.slices[:-1]:
        c = names.index(s.name)
        assert np.all(data.labels("validation")[data.slice_rows(s)] == c)
        assert fashion.CLASS_NAMES[c] in s.description
    low = data.sets["low_light"]["image"]
    assert np.allclose(low, 0.3 * x**1.5)
    assert np.array_equal(data.labels("low_light"), data.labels("validation"))
    # deterministic for a seed, another seed another split
    assert _fingerprint(fashion.prepare(p, seed=0)) == _fingerprint(data)
    assert _fingerprint(fashion.prepare(p, seed=1))["train"] != _fingerprint(data)["train"]


def test_fashion_row_limits(fashion_dir: Path) -> None:
    p = _fashion_params(fashion_dir, max_train_rows=120, max_validation_rows=40)
    data = fashion.prepare(p, seed=0)
    rows = {k: len(v[LABELS]) for k, v in data.sets.items()}
    assert rows == {"train": 70, "calibration": 50, "validation": 40, "low_light": 40}
    assert np.bincount(data.labels("validation"), minlength=10).tolist() == [4] * 10


def test_fashion_train_export_parity(fashion_dir: Path, tmp_path: Path) -> None:
    p = _fashion_params(fashion_dir, batch_size=32, learning_rate=0.003)
    data = fashion.prepare(p, seed=0)
    module, log = fashion.PRESET.train(p, data, seed=0)
    assert len(log["epochs"]) == 1 and log["train_rows"] == 250
    again, _ = fashion.PRESET.train(p, data, seed=0)
    for (k, a), b in zip(module.state_dict().items(), again.state_dict().values(), strict=True):
        assert a.equal(b), f"{k} differs between two seeded runs"
    path = tmp_path / "model.onnx"
    export(module, {k: v[:2] for k, v in data.feeds("validation").items()}, path)
    err = parity(module, path, data.feeds("validation"), p.parity_tolerance)
    assert err <= p.parity_tolerance
    suffix, png = fashion.PRESET.render_failure(
        {k: v[:1] for k, v in data.sets["validation"].items()}
    )
    assert suffix == ".png" and png.startswith(b"\x89PNG")


def test_fashion_full_size_model_has_about_200k_parameters() -> None:
    module = fashion.build(FashionParams(), 10)
    assert 150_000 < sum(t.numel() for t in module.parameters()) < 300_000


def test_fashion_missing_folder_names_path_and_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(CLEAR, match="apt-get install dataset-fashion-mnist") as e:
        fashion.prepare(_fashion_params(missing), seed=0)
    assert str(missing) in str(e.value) and "model.data_dir" in str(e.value)
    assert "train-images-idx3-ubyte.gz" in str(e.value)


def test_fashion_missing_or_broken_file(fashion_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "partial"
    shutil.copytree(fashion_dir, folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(CLEAR, match=r"lacks t10k-labels-idx1-ubyte\.gz.*apt-get install"):
        fashion.prepare(_fashion_params(folder), seed=0)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(CLEAR, match=r"t10k-labels-idx1-ubyte\.gz is not a readable \.gz"):
        fashion.prepare(_fashion_params(folder), seed=0)
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 100) + bytes(10))  # header says 100
    with pytest.raises(CLEAR, match="truncated or corrupt"):
        fashion.prepare(_fashion_params(folder), seed=0)


def test_fashion_params_refuse_bad_values() -> None:
    with pytest.raises(ParamsError, match="max_train_rows"):
        FashionParams(max_train_rows=100, calibration_size=512)
    with pytest.raises(ParamsError, match="channels"):
        FashionParams(channels=[8])


# --- onnx_file --------------------------------------------------------------------------------

N = 60  # rows in the .npz
CLASSES = 4


@pytest.fixture(scope="module")
def byo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 1x8x8 -> 4 classifier exported with the pipeline's exporter (dynamic batch)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 64, CLASSES),
    ).eval()
    path = tmp_path_factory.mktemp("byo") / "classifier.onnx"
    export(model, {"image": np.zeros((2, 1, 8, 8), np.float32)}, path)
    return path


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((N, 1, 8, 8), dtype=np.float32)
    return {
        "image": x,
        LABELS: (np.arange(N) % CLASSES).astype(np.int64),
        MASK_PREFIX + "bright": x.mean(axis=(1, 2, 3)) > 0.5,
    }


def _byo(tmp_path: Path, model: Path, arrays: dict[str, np.ndarray], **kw: Any) -> OnnxFileParams:
    data = tmp_path / "data.npz"
    save_arrays(data, arrays)
    return OnnxFileParams(path=str(model), data=str(data), **{"calibration_share": 0.25, **kw})


def test_onnx_file_prepare_and_provide(byo_model: Path, tmp_path: Path) -> None:
    arrays = _arrays()
    p = _byo(tmp_path, byo_model, arrays)
    data = onnx_file.prepare(p, seed=0)
    assert sorted(data.sets) == ["calibration", "validation"]  # no train set: nothing to train
    assert len(data.labels("calibration")) == 15 and len(data.labels("validation")) == 45
    assert data.inputs == ["image"] and data.class_names == ["0", "1", "2", "3"]
    names = [s.name for s in data.slices]
    assert names == ["bright", "class_0", "class_1", "class_2", "class_3"]
    # the split keeps rows whole, and each part remembers its rows' indices in the .npz
    val, cal = data.sets["validation"], data.sets["calibration"]
    rows = val[onnx_file.ROW]
    assert sorted([*rows, *cal[onnx_file.ROW]]) == list(range(N))
    assert np.array_equal(arrays["image"][rows], val["image"])
    assert np.array_equal(arrays[LABELS][rows], val[LABELS])
    assert np.array_equal(arrays[MASK_PREFIX + "bright"][rows], val[MASK_PREFIX + "bright"])
    assert _fingerprint(onnx_file.prepare(p, seed=0)) == _fingerprint(data)
    assert _fingerprint(onnx_file.prepare(p, seed=1)) != _fingerprint(data)
    named = onnx_file.prepare(dataclasses.replace(p, class_names=["a", "b c", "d", "e"]), seed=0)
    assert [s.name for s in named.slices][1:3] == ["class_a", "class_b_c"]

    out = tmp_path / "baseline" / "model.onnx"
    log = onnx_file.provide_onnx(p, data, out)
    assert out.read_bytes() == byo_model.read_bytes()
    assert log["files"] == ["model.onnx"] and log["size_bytes"] == byo_model.stat().st_size
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.run(None, data.feeds("validation"))[0].shape == (45, CLASSES)

    suffix, png = onnx_file_render.render_failure({k: v[:1] for k, v in val.items()})
    assert suffix == ".png"  # a (1, 8, 8) input is an image: scaled up, its row kept as text
    img = Image.open(io.BytesIO(png))
    assert img.size == (112, 112) and img.text[onnx_file.ROW] == str(rows[0])


def test_onnx_file_external_data_travels(byo_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ext"
    folder.mkdir()
    model = onnx.load(str(byo_model))
    onnx.save(
        model,
        str(folder / "m.onnx"),
        save_as_external_data=True,
        location="weights.data",
        size_threshold=512,  # the weights; small shape constants stay inline for ORT
    )
    p = _byo(tmp_path, folder / "m.onnx", _arrays())
    data = onnx_file.prepare(p, seed=0)
    out = tmp_path / "baseline" / "model.onnx"
    log = onnx_file.provide_onnx(p, data, out)
    assert log["files"] == ["model.onnx", "weights.data"]
    assert (out.parent / "weights.data").read_bytes() == (folder / "weights.data").read_bytes()
    feeds = data.feeds("validation")
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    ref = ort.InferenceSession(str(byo_model), providers=["CPUExecutionProvider"])
    assert np.allclose(got, ref.run(None, feeds)[0])

    (folder / "weights.data").unlink()
    with pytest.raises(CLEAR, match=r"keeps its weights in 'weights\.data', which is missing"):
        onnx_file.prepare(p, seed=0)


def test_onnx_file_refuses_a_model_changed_after_prepare(byo_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    shutil.copyfile(byo_model, model)
    p = _byo(tmp_path, model, _arrays())
    data = onnx_file.prepare(p, seed=0)
    proto = onnx.load(str(model))
    proto.doc_string = "retrained"
    onnx.save(proto, str(model))
    with pytest.raises(CLEAR, match=r"changed since the prepare stage.*dvc repro -f -s prepare"):
        onnx_file.provide_onnx(p, data, tmp_path / "out" / "model.onnx")


def test_onnx_file_never_builds_or_trains(byo_model: Path, tmp_path: Path) -> None:
    p = _byo(tmp_path, byo_model, _arrays())
    with pytest.raises(NotApplicable, match="arrive"):
        onnx_file.build(p, CLASSES)
    with pytest.raises(NotApplicable, match="nothing to train"):
        onnx_file.train(p, onnx_file.prepare(p, seed=0), seed=0)


def _set(key: str, value: Callable[[dict[str, np.ndarray]], Any]) -> Callable[..., None]:
    def change(arrays: dict[str, np.ndarray]) -> None:
        arrays[key] = value(arrays)

    return change


def _drop(key: str) -> Callable[..., None]:
    return lambda arrays: arrays.pop(key)


BAD_DATA = {
    "no labels": (_drop(LABELS), r"no 'labels' array.*np\.savez"),
    "float labels": (
        _set(LABELS, lambda a: a[LABELS].astype(np.float32)),
        r"'labels' is float32.*1-D integer array",
    ),
    "labels out of range": (
        _set(LABELS, lambda a: a[LABELS] + 1),
        r"'labels' range from 1 to 4.*has 4 classes.*class indices 0\.\.3",
    ),
    "negative label": (_set(LABELS, lambda a: a[LABELS] - 1), r"range from -1 to 2"),
    "missing input": (
        _drop("image"),
        r"has no array 'image', an input the model expects.*save it under that name",
    ),
    "wrong static dim": (
        _set("image", lambda a: np.zeros((N, 1, 9, 8), np.float32)),
        r"input 'image' has shape \[60, 1, 9, 8\].*axis 2 is 9, the model expects 8",
    ),
    "wrong rank": (
        _set("image", lambda a: a["image"].reshape(N, 64)),
        r"input 'image' has shape \[60, 64\] \(2-D\) but the model declares .*\(4-D\).*reshape",
    ),
    "wrong dtype": (
        _set("image", lambda a: a["image"].astype(np.float64)),
        r"input 'image' is float64 but the model expects float32.*astype\(np\.float32\)",
    ),
    "rows differ": (_set("image", lambda a: a["image"][:-1]), r"'image' has 59 rows but 'labels'"),
    "mask wrong length": (
        _set(MASK_PREFIX + "bright", lambda a: a[MASK_PREFIX + "bright"][:-1]),
        r"slice mask 'slice__bright' is bool of shape \[59\].*boolean array of shape \[60\]",
    ),
    "mask wrong dtype": (
        _set(MASK_PREFIX + "bright", lambda a: a[MASK_PREFIX + "bright"].astype(np.int64)),
        r"slice mask 'slice__bright' is int64.*boolean array",
    ),
    "mask bad name": (_set(MASK_PREFIX + "a,b", lambda a: np.ones(N, bool)), r"rename it"),
    "empty slice": (
        _set(MASK_PREFIX + "none", lambda a: np.zeros(N, bool)),
        r"slice 'none' selects 0 row\(s\), none left in validation",
    ),
    "stray array": (
        _set("imgae", lambda a: np.zeros(3)),
        r"array 'imgae' is neither a model input.*rename or remove it",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_onnx_file_bad_data_is_a_clear_error(case: str, byo_model: Path, tmp_path: Path) -> None:
    change, message = BAD_DATA[case]
    arrays = _arrays()
    change(arrays)
    p = _byo(tmp_path, byo_model, arrays)
    with pytest.raises(CLEAR, match=message) as e:
        onnx_file.prepare(p, seed=0)
    assert "model.data" in str(e.value)


def test_onnx_file_bad_files_and_params(byo_model: Path, tmp_path: Path) -> None:
    p = _byo(tmp_path, byo_model, _arrays())
    with pytest.raises(CLEAR, match=r"model\.path = '.*nope\.onnx': no such file.*set model\.path"):
        onnx_file.prepare(dataclasses.replace(p, path=str(tmp_path / "nope.onnx")), seed=0)
    with pytest.raises(CLEAR, match=r"model\.data = 'nope\.npz': no such file \(relative to"):
        onnx_file.prepare(dataclasses.replace(p, data="nope.npz"), seed=0)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07 this is not a protobuf")
    with pytest.raises(CLEAR, match=r"model\.path = .*junk\.onnx.* not a (readable|valid) ONNX"):
        onnx_file.prepare(dataclasses.replace(p, path=str(junk)), seed=0)
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_bytes(b"not a zip")
    with pytest.raises(CLEAR, match=r"model\.data = .*bad\.npz.* not a readable \.npz"):
        onnx_file.prepare(dataclasses.replace(p, data=str(bad_npz)), seed=0)
    with pytest.raises(CLEAR, match=r"model\.class_names has 3 names.*4 classes"):
        onnx_file.prepare(dataclasses.replace(p, class_names=["a", "b", "c"]), seed=0)
    with pytest.raises(CLEAR, match=r"calibration_share = 0\.001 of 60 rows leaves 0"):
        onnx_file.prepare(dataclasses.replace(p, calibration_share=0.001), seed=0)
    with pytest.raises(ParamsError, match=r"calibration_share = 1\.5"):
        OnnxFileParams(path="m.onnx", data="d.npz", calibration_share=1.5)
    with pytest.raises(ParamsError, match=r"path = ''.*your \.onnx model"):
        OnnxFileParams(data="d.npz")


def test_onnx_file_refuses_a_fixed_batch_axis(byo_model: Path, tmp_path: Path) -> None:
    proto = onnx.load(str(byo_model))
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_param")
    dim.dim_value = 1
    fixed = tmp_path / "fixed.onnx"
    onnx.save(proto, str(fixed))
    p = _byo(tmp_path, fixed, _arrays())
    with pytest.raises(CLEAR, match=r"fixed batch size of 1.*dynamic first axis"):
        onnx_file.prepare(p, seed=0)


def _two_input_model(path: Path) -> None:
    """scores = a + b, both [batch, seq]: two inputs sharing a symbolic axis; seq classes."""
    from onnx import TensorProto, helper

    def value(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "seq"])

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["scores"])],
        "two_inputs",
        [value("a"), value("b")],
        [value("scores")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_onnx_file_symbolic_axes_are_free_but_shared(tmp_path: Path) -> None:
    model = tmp_path / "two.onnx"
    _two_input_model(model)
    rng = np.random.default_rng(0)
    a, b = rng.random((20, 5), dtype=np.float32), rng.random((20, 5), dtype=np.float32)
    labels = (np.arange(20) % 5).astype(np.int64)
    p = _byo(tmp_path, model, {"a": a, "b": b, LABELS: labels})
    data = onnx_file.prepare(p, seed=0)
    assert data.inputs == ["a", "b"] and len(data.class_names) == 5  # width from a probe run
    with pytest.raises(CLEAR, match=r"axis 1 of input 'b' is 4 but axis 1 of input 'a' is 5"):
        onnx_file.prepare(_byo(tmp_path, model, {"a": a, "b": b[:, :4], LABELS: labels}), seed=0)
