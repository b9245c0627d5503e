"""The exported ONNX file does not depend on where the checkout sits."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx

from stages.export import export

SOURCE = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.fc = torch.nn.Linear(2 * 16, 3)

    def forward(self, image):
        return self.fc(torch.relu(self.conv(image)).flatten(1))
"""


def _export_from(folder: Path) -> bytes:
    """Import the same module source from `folder` (as a clone would) and export it there."""
    import torch

    folder.mkdir(parents=True)
    (folder / "net.py").write_text(SOURCE)
    spec = importlib.util.spec_from_file_location(f"net_{folder.name}", folder / "net.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    net = mod.Net().eval()
    out = folder / "model.onnx"
    export(net, {"image": np.zeros((2, 1, 4, 4), dtype=np.float32)}, out)
    return out.read_bytes()


def test_two_checkouts_export_identical_bytes_without_their_paths(tmp_path: Path) -> None:
    first = _export_from(tmp_path / "clone_one")
    second = _export_from(tmp_path / "somewhere_else" / "clone_two")

    assert first == second
    assert str(tmp_path).encode() not in first
    model = onnx.load_from_string(first)
    assert all(len(n.metadata_props) == 0 and not n.doc_string for n in model.graph.node)
    assert model.producer_name  # what a user needs is kept
    assert model.opset_import
