"""``evoprune export``: pruned checkpoints to ONNX (checked with onnxruntime) and TorchScript; output refusal."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from evoprune.cli import main
from evoprune.models import create_model
from evoprune.models.checkpoint import load_model, save_checkpoint
from evoprune.pruning import PruningSpace, apply, masks_to_pruned



@pytest.fixture(scope="module")
def pruned_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = create_model("resnet20", width=0.25).eval()
    sp = PruningSpace(m)
    masks = sp.random_masks(0, 0.5)
    path = tmp_path_factory.mktemp("export") / "pruned.pt"
    save_checkpoint(str(path), apply(m, masks, sp), meta={"arch": "resnet20", "model_kwargs": {"width": 0.25},
                                                          "pruned": masks_to_pruned(masks), "image_size": 32})
    return path


def _invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_export_onnx_matches_torch(pruned_ckpt, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    r = _invoke("--json", "export", "--checkpoint", str(pruned_ckpt), "--format", "onnx", "--out", str(out))
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["verified_with"] == "onnxruntime" and summary["pruned"] and summary["input_shape"] == [1, 3, 32, 32]
    model, _ = load_model(str(pruned_ckpt))
    x = torch.randn(5, 3, 32, 32)  # another batch size: the batch axis is dynamic
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert np.allclose(got, model.eval()(x).numpy(), atol=1e-4)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp file left


def test_export_torchscript(pruned_ckpt, tmp_path):
    out = tmp_path / "m.pt"
    r = _invoke("export", "--checkpoint", str(pruned_ckpt), "--format", "torchscript", "--out", str(out),
                "--input-size", "40")
    assert r.exit_code == 0, r.output
    assert "exported resnet20" in r.output and "1x3x40x40" in r.output
    model, _ = load_model(str(pruned_ckpt))
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(out))(x), model.eval()(x), atol=1e-5)


def test_existing_output_is_refused_unless_overwrite(pruned_ckpt, tmp_path):
    out = tmp_path / "m.pt"
    out.write_text("keep me")
    r = _invoke("export", "--checkpoint", str(pruned_ckpt), "--format", "torchscript", "--out", str(out))
    assert r.exit_code == 2
    assert r.output.strip() == f"error: output file '{out}' already exists; pass --overwrite to replace it"
    assert out.read_text() == "keep me"
    r = _invoke("export", "--checkpoint", str(pruned_ckpt), "--format", "torchscript", "--out", str(out),
                "--overwrite")
    assert r.exit_code == 0, r.output
    assert out.stat().st_size > 1000


@pytest.mark.parametrize("args,match", [
    (["--checkpoint", "missing.pt", "--out", "x.onnx"], "checkpoint 'missing.pt' does not exist"),
    (["--out", "{tmp}", "--checkpoint", "{ckpt}"], "is a directory"),
    (["--checkpoint", "{ckpt}", "--out", "{tmp}/a.onnx", "--input-size", "0"], "must be > 0"),
    (["--checkpoint", "{ckpt}", "--out", "{tmp}/a.onnx", "--format", "tflite"], "'tflite' is not one of"),
    (["--checkpoint", "{bad}", "--out", "{tmp}/a.onnx"], "cannot be read as a torch file|corrupt"),
])
def test_user_errors_are_one_line(pruned_ckpt, tmp_path, args, match):
    import re

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    args = [a.format(tmp=tmp_path, ckpt=pruned_ckpt, bad=bad) for a in args]
    r = _invoke("export", *args)
    assert r.exit_code == 2, r.output
    assert re.search(match, r.output)
    if "error:" in r.output:
        assert len(r.output.strip().splitlines()) == 1
