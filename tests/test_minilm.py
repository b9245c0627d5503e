"""Tests for the minilm_sentiment preset on the real encoder and the real snippets, kept small.

The module's model is the real MiniLM-L6 truncated to its first layer (`layers: 1`), trained on
a stratified sample of 400 snippets (`max_rows: 400`): about 270 to train on, 32 to calibrate,
100 to validate. One test, marked slow, exports the full six-layer encoder and checks parity.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from stages import data as datasets
from stages import params as config
from stages.export import MODEL_FILE, WEIGHTS_FILE, export, parity
from stages.failure_rows import write_failures
from stages.models import minilm, minilm_corpus, minilm_encoder, minilm_model_dir, minilm_tokens
from stages.models.options import PARAMS, MiniLMParams
from stages.storage import sha256_arrays
from stages.techniques import channel_surgery, prune_channels
from stages.techniques.base import Context
from stages.techniques.options import prune as prune_options

ROOT = Path(__file__).resolve().parents[1]
SMALL: dict[str, Any] = {"layers": 1, "max_rows": 400, "calibration_size": 32, "epochs": 5}
SETS = ["train", "calibration", "validation", minilm.FIXED]
SLICES = ["short", "long", "negation", "class_rotten", "class_fresh"]


@pytest.fixture(scope="module")
def small() -> MiniLMParams:
    return MiniLMParams(**SMALL)


@pytest.fixture(scope="module")
def data(small: MiniLMParams) -> datasets.Prepared:
    return minilm.prepare(small, seed=0)


@pytest.fixture(scope="module")
def trained(small: MiniLMParams, data: datasets.Prepared) -> tuple[torch.nn.Module, dict[str, Any]]:
    return minilm.train(small, data, seed=0)


@pytest.fixture(scope="module")
def onnx_path(
    tmp_path_factory: pytest.TempPathFactory,
    data: datasets.Prepared,
    trained: tuple[torch.nn.Module, dict[str, Any]],
) -> Path:
    """Exported as the baseline stage does: two validation rows as the example."""
    path = tmp_path_factory.mktemp("minilm") / "model.onnx"
    example = {k: v[:2] for k, v in data.feeds("validation").items()}
    export(trained[0], example, path, minilm.DYNAMIC_AXES)
    return path


def test_yaml_defaults_equal_the_dataclass() -> None:
    conf = yaml.safe_load((ROOT / "conf" / "model" / "minilm_sentiment.yaml").read_text())
    assert conf.pop("name") == "minilm_sentiment"
    assert conf == dataclasses.asdict(MiniLMParams())


def test_prepare_gives_the_sets_slices_and_length_info(
    small: MiniLMParams, data: datasets.Prepared, tmp_path: Path
) -> None:
    assert data.inputs == ["input_ids", "attention_mask"]
    assert data.class_names == ["rotten", "fresh"]
    assert sorted(data.sets) == sorted(SETS)
    rows = {k: len(v[datasets.LABELS]) for k, v in data.sets.items()}
    assert rows["train"] + rows["calibration"] + rows["validation"] == 400
    assert rows["calibration"] == 32 and rows["validation"] == 100
    for name in ("train", "calibration", "validation"):
        s = data.sets[name]
        for k in data.inputs:
            assert s[k].dtype == np.int64 and s[k].shape == (rows[name], small.max_length)
        assert s[minilm.TEXT].dtype == np.dtype(f"<U{minilm.TEXT_WIDTH}")
        assert all(t for t in s[minilm.TEXT])
        assert set(np.unique(s[datasets.LABELS])) == {0, 1}
        mask = s["attention_mask"]
        assert (mask[:, 0] == 1).all() and (np.diff(mask, axis=1) <= 0).all()  # padded right
        assert (s["input_ids"][mask == 0] == 0).all()  # [PAD]
    v = data.sets["validation"]
    real = v["attention_mask"].sum(1)
    assert [s.name for s in data.slices] == SLICES
    assert all(s.set == "validation" and s.description for s in data.slices)
    assert np.array_equal(v["slice__short"], real <= small.short_tokens)
    assert np.array_equal(v["slice__long"], real >= small.long_tokens)
    assert np.array_equal(v["slice__class_fresh"], v[datasets.LABELS] == 1)
    assert 0 < v["slice__negation"].sum() < 100
    for text, neg in zip(v[minilm.TEXT], v["slice__negation"], strict=True):
        assert neg == bool(minilm.NEGATION.search(str(text)))
    fixed = data.sets[minilm.FIXED]
    assert fixed["input_ids"].shape == (100, small.max_length)
    for k in (*data.inputs, datasets.LABELS):
        assert np.array_equal(fixed[k], v[k])
    tokens = data.info["tokens"]
    assert 3 <= tokens["min"] <= tokens["p50"] <= tokens["p90"] <= tokens["max"] <= 128
    assert data.info["corpus"]["plot"] > 1000 and data.info["corpus"]["used"] == 400
    datasets.write(data, tmp_path)  # np.save with allow_pickle=False takes the text column
    again = datasets.read(tmp_path)
    assert np.array_equal(again.sets["validation"][minilm.TEXT], v[minilm.TEXT])


def test_prepare_is_deterministic(small: MiniLMParams, data: datasets.Prepared) -> None:
    again = minilm.prepare(small, seed=0)
    assert {k: sha256_arrays(v) for k, v in again.sets.items()} == {
        k: sha256_arrays(v) for k, v in data.sets.items()
    }
    assert again.info == data.info
    other = minilm.prepare(small, seed=1)  # the seed picks the sample and the split
    assert set(other.sets["validation"][minilm.TEXT]) != set(data.sets["validation"][minilm.TEXT])


def test_corpus_drops_plot_rows_and_duplicates() -> None:
    texts, labels, counts = minilm_corpus.read_corpus(minilm_corpus.corpus_path())
    assert len(texts) == len(set(texts)) > 12_000
    assert counts["plot"] > 1000 and counts["duplicates"] > 0
    assert 0.55 < labels.mean() < 0.6  # about 7,400 fresh of 12,800


@pytest.mark.parametrize(
    ("text", "negated"),
    [
        ("It isn't funny.", True),
        ("Real Women Have Curves doesn\u2019t offer any easy answers.", True),
        ("Nothing works here", True),
        ("Neither smart nor fun.", True),
        ("A film without a pulse.", True),
        ("A notable, knowing film; nonetheless a nose for nonsense.", False),
        ("Cannotation aside, a noted success", False),
    ],
)
def test_negation_words(text: str, negated: bool) -> None:
    assert bool(minilm.NEGATION.search(text)) is negated


def test_train_is_deterministic_and_logs_the_loss(
    small: MiniLMParams, data: datasets.Prepared, trained: tuple[torch.nn.Module, dict[str, Any]]
) -> None:
    module, log = trained
    assert not module.training
    assert len(log["epochs"]) == small.epochs and log["final_loss"] == log["epochs"][-1]["loss"]
    assert log["train_rows"] == len(data.labels("train"))
    again, log2 = minilm.train(small, data, seed=0)
    assert log2 == log
    a, b = module.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(module.encoder.encoder.layer) == 1
    fresh = minilm_encoder.build(small, 2)  # the encoder is frozen: only the head moved
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in a.items() if k.startswith("enc"))


def test_export_matches_torch_within_tolerance(
    small: MiniLMParams,
    data: datasets.Prepared,
    trained: tuple[torch.nn.Module, dict[str, Any]],
    onnx_path: Path,
) -> None:
    assert [f.name for f in onnx_path.parent.iterdir()] == ["model.onnx"]  # no .onnx.data
    err = parity(trained[0], onnx_path, data.feeds("validation"), small.parity_tolerance)
    assert err <= small.parity_tolerance


def test_exported_graph_takes_other_batch_sizes_and_lengths(
    data: datasets.Prepared, trained: tuple[torch.nn.Module, dict[str, Any]], onnx_path: Path
) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for i in sess.get_inputs():
        assert i.shape == ["batch", "sequence"] and i.type == "tensor(int64)"
    feeds = data.feeds("validation")
    cases = [
        minilm_tokens.trim({k: v[:1] for k, v in feeds.items()}),
        minilm_tokens.trim({k: v[3:8] for k, v in feeds.items()}),
        {k: v[:3] for k, v in feeds.items()},  # padded to max_length
        {k: np.pad(v[:2], ((0, 0), (0, 72))) for k, v in feeds.items()},  # 200 tokens
    ]
    for feed in cases:
        with torch.no_grad():
            expected = trained[0](*(torch.from_numpy(v) for v in feed.values())).numpy()
        got = sess.run(None, feed)[0]
        assert got.shape == (len(feed["input_ids"]), 2)
        assert np.abs(got - expected).max() <= 1e-4


def test_trim_cuts_padding(trained: tuple[torch.nn.Module, dict[str, Any]]) -> None:
    mask = np.zeros((3, 10), dtype=np.int64)
    mask[0, :4], mask[1, :6], mask[2, :2] = 1, 1, 1
    ids = np.where(mask == 1, 2000 + np.arange(10), 0).astype(np.int64)
    ids[:, 0] = 101
    cut = minilm_tokens.trim({"input_ids": ids, "attention_mask": mask})
    assert list(cut) == ["input_ids", "attention_mask"]
    assert cut["input_ids"].shape == cut["attention_mask"].shape == (3, 6)
    assert np.array_equal(cut["input_ids"], ids[:, :6]) and cut["input_ids"].flags.c_contiguous
    with torch.no_grad():
        full = trained[0](torch.from_numpy(ids), torch.from_numpy(mask))
        short = trained[0](*(torch.from_numpy(v) for v in cut.values()))
    assert torch.allclose(full, short, atol=1e-5)  # padding changes nothing but the work
    empty = minilm_tokens.trim({"input_ids": ids, "attention_mask": np.zeros_like(mask)})
    assert empty["input_ids"].shape == (3, 1)
    same = minilm_tokens.trim({"input_ids": ids[:, :6], "attention_mask": mask[:, :6]})
    assert same["input_ids"].shape == (3, 6)


def test_whole_sets_run_shortest_first_and_come_back_in_row_order(
    data: datasets.Prepared, onnx_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    from stages import runtime

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = data.feeds("validation")
    widths: list[int] = []
    real_run = sess.run

    class Spy:
        def run(self, names: Any, feed: dict[str, np.ndarray]) -> Any:
            widths.append(feed["attention_mask"].shape[1])
            return real_run(names, feed)

    monkeypatch.setattr(runtime, "ROWS_PER_CALL", 16)
    got = runtime.run_rows(Spy(), feeds, minilm.PRESET)[0]  # type: ignore[arg-type]
    one_by_one = np.concatenate(
        [
            real_run(None, minilm_tokens.trim({k: v[i : i + 1] for k, v in feeds.items()}))[0]
            for i in range(len(feeds["input_ids"]))
        ]
    )
    assert got.shape == one_by_one.shape and np.abs(got - one_by_one).max() < 1e-4
    lengths = np.sort(minilm_tokens.lengths(feeds))
    assert widths == [
        int(lengths[min(i + 15, len(lengths) - 1)]) for i in range(0, len(lengths), 16)
    ]
    unsorted = runtime.run_rows(sess, feeds)[0]  # no preset: rows as given, padded to max_length
    assert np.abs(got - unsorted).max() < 1e-4


def test_rows_alone_match_batches_in_fp32_but_not_under_dynamic_int8(
    data: datasets.Prepared, onnx_path: Path, tmp_path: Path
) -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from stages import predictions, validate

    feeds, labels = data.feeds("validation"), data.labels("validation")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    alone = predictions.predict(sess, feeds, minilm.PRESET)
    inv = validate.batch_invariance(sess, feeds, alone, labels, minilm.PRESET)
    assert inv["rows"] == len(labels) and inv["argmax_changed"] == 0
    assert inv["max_abs_difference"] < 1e-4
    assert inv["accuracy_alone"] == inv["accuracy_batched"]
    quantized = tmp_path / "int8.onnx"
    quantize_dynamic(onnx_path, quantized, weight_type=QuantType.QInt8)
    q = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    q_alone = predictions.predict(q, feeds, minilm.PRESET)
    row = minilm_tokens.trim({k: v[7:8] for k, v in feeds.items()})
    assert np.array_equal(q_alone[7], q.run(None, row)[0][0])  # "alone" is one call on one row
    # activation ranges are taken per call: the same row gives other logits among other rows
    assert (
        validate.batch_invariance(q, feeds, q_alone, labels, minilm.PRESET)["max_abs_difference"]
        > 1e-3
    )
    # on a sample spread over the lengths: the longest row is in it, the set's size is named,
    # and the sample's rows are compared with their own rows alone (a shifted pairing would not
    # agree bit for bit)
    few = validate.batch_invariance(sess, feeds, alone, labels, minilm.PRESET, rows=5)
    assert few["rows"] == 5 and few["of_rows"] == len(labels)
    assert few["argmax_changed"] == 0 and few["max_abs_difference"] < 1e-4
    longest = int(np.argmax(minilm_tokens.lengths(feeds)))
    shifted = np.roll(alone, 1, axis=0)
    assert (
        validate.batch_invariance(sess, feeds, shifted, labels, minilm.PRESET, rows=5)[
            "max_abs_difference"
        ]
        > 1e-3
    )
    assert longest in validate.spread_rows(feeds, minilm.PRESET, 5)


def test_ffn_pruning_is_exact_for_neurons_that_contribute_nothing(
    data: datasets.Prepared, trained: tuple[torch.nn.Module, dict[str, Any]]
) -> None:
    import copy

    module = copy.deepcopy(trained[0])
    blocks = channel_surgery.ffn_blocks(module)
    assert [name for name, _ in blocks] == ["encoder.encoder.layer.0"]
    up = blocks[0][1].intermediate.dense
    dead = torch.randperm(1536, generator=torch.Generator().manual_seed(0))[:384]
    with torch.no_grad():  # GELU(0) = 0: these neurons add nothing to the block's output
        up.weight[dead] = 0
        up.bias[dead] = 0
    smaller, layers = channel_surgery.shrink_ffn(module, blocks, 0.25, "l2")
    assert layers == [
        {"layer": "encoder.encoder.layer.0", "type": "FFN neurons", "before": 1536, "after": 1152}
    ]
    kept = smaller.encoder.encoder.layer[0]
    assert kept.intermediate.dense.weight.shape == (1152, 384)
    assert kept.output.dense.weight.shape == (384, 1152)
    assert module.encoder.encoder.layer[0].intermediate.dense.out_features == 1536  # a copy
    feed = minilm_tokens.trim({k: v[:16] for k, v in data.feeds("validation").items()})
    args = [torch.from_numpy(feed[k]) for k in minilm_tokens.INPUTS]
    with torch.no_grad():
        assert torch.allclose(module(*args), smaller(*args), atol=1e-5)


def test_prune_channels_on_the_encoder_refits_the_head_and_exports(
    small: MiniLMParams,
    data: datasets.Prepared,
    trained: tuple[torch.nn.Module, dict[str, Any]],
    onnx_path: Path,
    tmp_path: Path,
) -> None:
    import shutil

    import onnxruntime as ort

    base = tmp_path / "baseline"
    base.mkdir()
    shutil.copy(onnx_path, base / MODEL_FILE)
    torch.save(trained[0].state_dict(), base / WEIGHTS_FILE)
    out = tmp_path / "candidate"
    out.mkdir()
    options = prune_options.ChannelOptions(amount=0.25, finetune_epochs=1)
    d = prune_channels.apply(
        Context(base / MODEL_FILE, options, data, out, 0, minilm.PRESET, small)
    )
    assert d["structure"] == "transformer FFN neurons"
    assert d["layers"][0]["after"] == 1152
    assert d["parameters"]["before"] - d["parameters"]["after"] == 2 * 384 * 384 + 384
    assert d["finetune"]["trained"] == "head only; encoder frozen"
    assert len(d["finetune"]["epochs"]) == 1
    sess = ort.InferenceSession(str(out / MODEL_FILE), providers=["CPUExecutionProvider"])
    feeds = data.feeds("validation")
    logits = sess.run(None, minilm_tokens.trim(feeds))[0]
    assert logits.shape == (len(data.labels("validation")), 2)
    lines = prune_channels.report({"manifest": {"details": d}})
    assert any(
        line.startswith("- Hidden neurons per FFN block: encoder.encoder.layer.0") for line in lines
    )


def test_render_failure_writes_the_snippet_as_markdown(
    data: datasets.Prepared, tmp_path: Path
) -> None:
    row = {
        "input_ids": np.array([[101, 2025, 102, 0]]),
        "attention_mask": np.array([[1, 1, 1, 0]]),
        datasets.LABELS: np.array([1]),
        minilm.TEXT: np.array(["*Not* bad # at_all [really]"], dtype="<U400"),
        "slice__negation": np.array([True]),
        "slice__short": np.array([True]),
        "slice__long": np.array([False]),
    }
    suffix, content = minilm.render_failure(row)
    text = content.decode()
    assert suffix == ".md"
    assert r"> \*Not\* bad \# at\_all \[really\]" in text
    assert "- label: fresh (1)" in text and "- tokens: 3" in text
    assert "- slices: negation, short" in text
    assert minilm._escape("- 12. It isn't\n`bad`.") == r"\- 12. It isn't \`bad\`."
    assert minilm._escape("12. Angry Men") == r"12\. Angry Men"
    # as validate.py calls it: every column of the set, one row each, plus index.csv
    rows = [
        {
            "kind": "right_to_wrong",
            "set": "validation",
            "index": 7,
            "label": int(data.labels("validation")[7]),
            "baseline_pred": 0,
            "candidate_pred": 1,
            "baseline_margin": 0.0,
            "candidate_margin": 0.5,
        }
    ]
    write_failures(tmp_path, rows, data, minilm.render_failure)
    files = sorted(f.name for f in tmp_path.iterdir())
    assert files[0].startswith("001_right_to_wrong_validation_7_") and files[0].endswith(".md")
    assert files[1] == "index.csv"
    snippet = (tmp_path / files[0]).read_text()
    name = data.class_names[rows[0]["label"]]
    assert f"- label: {name}" in snippet and snippet.count("\n> ") == 1


def test_model_dir_without_weights_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(config.ParamsError) as e:
        minilm.prepare(MiniLMParams(**SMALL, model_dir=str(tmp_path)), seed=0)
    msg = str(e.value)
    assert str(tmp_path) in msg and "model.safetensors" in msg and "config.json" in msg
    source = minilm_model_dir.model_dir(MiniLMParams())
    for f in ("config.json", "tokenizer.json", "vocab.txt"):
        (tmp_path / f).write_bytes((source / f).read_bytes())
    with pytest.raises(
        config.ParamsError, match=r"missing model\.safetensors or pytorch_model\.bin"
    ):
        minilm_model_dir.model_dir(MiniLMParams(model_dir=str(tmp_path)))
    with pytest.raises(config.ParamsError, match="not a directory"):
        minilm_model_dir.model_dir(MiniLMParams(model_dir=str(tmp_path / "nowhere")))


def test_params_are_validated(cfg: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PARAMS, "minilm_sentiment", MiniLMParams)
    conf = yaml.safe_load((ROOT / "conf" / "model" / "minilm_sentiment.yaml").read_text())
    cfg["technique"] = {"int8_dynamic": {}}  # other techniques' defaults may name digits fields
    cfg["model"] = dict(conf)
    assert isinstance(config.validate(cfg).model, MiniLMParams)
    cfg["model"] = {**conf, "hidden": 64}
    with pytest.raises(config.ParamsError, match=r"model\.hidden.*max_length"):
        config.validate(cfg)
    for bad, field in (
        ({"long_tokens": 10}, "long_tokens"),
        ({"max_rows": 100}, "max_rows"),
        ({"max_length": 1024}, "max_length"),
        ({"layers": -1}, "layers"),
    ):
        cfg["model"] = {**conf, **bad}
        with pytest.raises(config.ParamsError, match=rf"model\.{field} = "):
            config.validate(cfg)
    with pytest.raises(config.ParamsError, match=r"layers = 9 .*<= 6"):
        minilm.prepare(MiniLMParams(layers=9), seed=0)  # checked where the encoder is first read


@pytest.mark.slow
def test_full_model_exports_as_one_file_with_parity(
    data: datasets.Prepared, tmp_path: Path
) -> None:
    """The real six-layer encoder (a seeded, untrained head): the baseline stage's export."""
    p = MiniLMParams()
    torch.manual_seed(0)
    module = minilm_encoder.build(p, 2)
    assert len(module.encoder.encoder.layer) == 6
    path = tmp_path / "model.onnx"
    feeds = data.feeds("validation")
    export(module, {k: v[:2] for k, v in feeds.items()}, path, minilm.DYNAMIC_AXES)
    assert [f.name for f in tmp_path.iterdir()] == ["model.onnx"]
    assert path.stat().st_size > 85_000_000  # 22.7M float32 parameters in the one protobuf
    assert parity(module, path, {k: v[:32] for k, v in feeds.items()}, p.parity_tolerance) < 1e-4
    natural = minilm_tokens.trim({k: v[:1] for k, v in feeds.items()})
    assert parity(module, path, natural, p.parity_tolerance) < 1e-4


def test_embeddings_give_the_same_bits_on_one_thread_and_on_two(
    trained: tuple[torch.nn.Module, dict[str, Any]],
    data: datasets.Prepared,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The train split is embedded on every thread: only safe while threads change no sum."""
    from stages import training

    module, seen = trained[0], []
    embed = module.embed
    monkeypatch.setattr(
        module, "embed", lambda *a: seen.append(torch.get_num_threads()) or embed(*a)
    )
    runs = []
    for threads in (1, 2):
        monkeypatch.setattr(training, "ALL_THREADS", threads)
        with training.deterministic(0):  # as in training: one thread outside the forward pass
            runs.append(minilm_encoder.embeddings(module, data.feeds("train"), lambda r, **_: r))

    assert set(seen) == {1, 2}  # the forward passes ran on ALL_THREADS
    assert torch.equal(runs[0], runs[1])


def test_inference_threads_end_where_training_left_them() -> None:
    from stages.training import deterministic, inference_threads

    with deterministic(0):
        with inference_threads():
            pass
        assert torch.get_num_threads() == 1
