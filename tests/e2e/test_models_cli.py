"""`imgstream run` with the model operations, as a user runs it: ``infer``, ``ocr``,
``plates:read=true``, and the one-line start-up errors (exit 2)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from tests.helpers import cli
from tests.unit.test_infer import classifier, reference_input
from tests.unit.test_models_ops import plate_image

TEXT = Path(__file__).resolve().parents[1] / "data" / "text"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NORMALISED = "scale=0.00392156862745098,mean=0.485/0.456/0.406,std=0.229/0.224/0.225"
CPU = "CPUExecutionProvider"


def _results(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "result"]


def _run(folder: Path, out: Path, spec: str, *extra: str) -> list[dict]:
    proc = cli("run", str(folder), "--out", str(out), "--ops", spec, *extra, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return _results(out)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN classifier with a dynamic batch axis (conv, relu, pool, gemm)."""
    return classifier(tmp_path_factory.mktemp("model") / "classifier.onnx")


def test_infer_equals_onnxruntime_in_micro_batches(
    model: Path, photos: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(16):  # the photos at different sizes, all 3-channel
        img = cv2.imread(str(photos[i % len(photos)]), cv2.IMREAD_COLOR)
        f = 0.3 + 0.05 * i
        cv2.imwrite(str(folder / f"{i:02d}.png"), cv2.resize(img, None, fx=f, fy=f))
    spec = f"infer:model={model},size=32,{NORMALISED}"
    results = _run(folder, tmp_path / "out", spec, "--max-batch", "8", "--max-wait", "2")
    assert len(results) == 16
    session = ort.InferenceSession(str(model), providers=[CPU])
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    for r in results:
        x = reference_input(cv2.imread(r["uri"]), (32, 32), scale=1 / 255, mean=MEAN, std=STD)
        logits, _ = session.run(None, {"x": x[None]})
        got = r["outputs"]["infer"]
        np.testing.assert_allclose(got["logits"], logits[0], atol=1e-4)
        assert 1 <= got["batch"] <= 8
        versions = r["lineage"]["versions"]
        assert versions["onnxruntime"] == ort.__version__
        assert versions["onnxruntime.providers"] == CPU
        assert versions["infer.model_sha256"] == sha
    # the evidence of batching: images computed together, in one session.run
    assert max(r["outputs"]["infer"]["batch"] for r in results) > 1


def test_ocr_and_plates_read_text(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "scenetext01.jpg").write_bytes((TEXT / "scenetext01.jpg").read_bytes())
    cv2.imwrite(str(folder / "plate1.png"), plate_image("A123BC"))
    cv2.imwrite(str(folder / "plate2.png"), plate_image("B456EK 77", seed=2))
    results = {
        Path(r["uri"]).stem: r for r in _run(folder, tmp_path / "out", "ocr|plates:read=true")
    }
    assert set(results) == {"scenetext01", "plate1", "plate2"}
    words = " ".join(line["text"] for line in results["scenetext01"]["outputs"]["ocr"]["lines"])
    for word in ("NOTICE", "DOUBLE", "PARKING", "PROHIBITED"):
        assert word in words.split()
    for name, text in (("plate1", "A123BC"), ("plate2", "B456EK 77")):
        found = results[name]["outputs"]["plates"]
        assert len(found["boxes"]) == 1 and [t["text"] for t in found["texts"]] == [text]
    versions = results["plate1"]["lineage"]["versions"]
    assert versions["onnxruntime.providers"] == CPU
    assert versions["ocr.rec_sha256"] == versions["plates.rec_sha256"]
    assert len(versions["ocr.det_sha256"]) == 64


def _stub(tmp_path: Path, module: str) -> dict[str, str]:
    """An environment in which ``import onnxruntime`` fails, or rapidocr is not a package."""
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    body = 'raise ImportError("not installed")' if module == "onnxruntime" else ""
    (stubs / f"{module}.py").write_text(body + "\n")
    return {**os.environ, "PYTHONPATH": str(stubs)}


@pytest.mark.parametrize(
    ("spec", "stub", "extra", "expected"),
    [
        ("infer:model=missing.onnx", None, (), "error: infer: model file not found: missing.onnx"),
        ("infer:model={model},size=64", None, (), "size= asks for 64x64"),
        (
            "infer:model={model}",
            "onnxruntime",
            (),
            "error: infer needs ONNX Runtime: pip install 'imgstream[models]'",
        ),
        ("ocr", "rapidocr", (), "error: ocr needs rapidocr (its PP-OCR models) and ONNX Runtime"),
        ("plates:read=true", "rapidocr", (), "error: ocr needs rapidocr"),
        # a usage error of --tile (click's usage lines, then the reason)
        ("infer:model={model}", None, ("--tile", "64"), "cannot run on tiles"),
        ("plates:read=true", None, ("--tile", "64"), "cannot run on tiles"),
    ],
)
def test_model_errors_stop_the_start_up(
    model: Path, tmp_path: Path, spec: str, stub: str | None, extra: tuple[str, ...], expected: str
) -> None:
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    args = ["run", str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    args += ["--ops", spec.format(model=model), *extra]
    proc = subprocess.run(
        [sys.executable, "-m", "imgstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_stub(tmp_path, stub) if stub else None,
    )
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    if not extra:
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
