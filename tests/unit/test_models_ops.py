"""The model operations through the pipeline: ``infer``, ``ocr`` and ``plates:read=true``."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from imgstream.errors import SpecError
from imgstream.ops import build_registry, op
from imgstream.ops.builtin.models import run_sizes
from imgstream.ops.pipeline import parse_spec
from tests.unit.test_infer import classifier, direct, reference_input
from tests.unit.test_ocr import RENDERED, render

REG = build_registry()
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NORMALISED = "scale=0.00392156862745098,mean=0.485/0.456/0.406,std=0.229/0.224/0.225"
CPU = "CPUExecutionProvider"


def plate_image(text: str, seed: int = 1) -> np.ndarray:
    """A plate-like box (white, black rim, black letters) on a noisy background:
    the bundled Russian-plate cascade finds it."""
    rng = np.random.default_rng(seed)
    img = np.clip(110 + rng.integers(-20, 20, (360, 640, 3)), 0, 255).astype(np.uint8)
    x, y, w, h = 170, 140, 280, 64
    cv2.rectangle(img, (x, y), (x + w, y + h), (255, 255, 255), -1)
    cv2.rectangle(img, (x, y), (x + w, y + h), (0, 0, 0), 3)
    cv2.putText(img, text, (x + 15, y + h - 15), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (0, 0, 0), 4)
    return img


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return classifier(tmp_path_factory.mktemp("models") / "classifier.onnx")


@pytest.fixture(scope="module")
def images(photos: list[Path]) -> list[np.ndarray]:
    """Eight real photos: BGR of different sizes, one 2-D gray, one BGRA."""
    bgr = [cv2.imread(str(p)) for p in photos]
    gray = cv2.cvtColor(bgr[0], cv2.COLOR_BGR2GRAY)
    bgra = np.dstack([bgr[1], np.full(bgr[1].shape[:2], 90, np.uint8)])
    return [*(bgr * 2)[:6], gray, bgra]


def session_runs(caplog: pytest.LogCaptureFixture, what: str) -> list[int]:
    """The sizes of the ``session.run`` calls the DEBUG lines report."""
    prefix = f"{what}: one session.run of "
    return [
        int(r.getMessage()[len(prefix) :].split()[0])
        for r in caplog.records
        if r.name == "imgstream.ops.builtin.models" and r.getMessage().startswith(prefix)
    ]


def test_infer_runs_the_micro_batch_in_one_session_run_equal_to_onnxruntime(
    model: Path, images: list[np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = parse_spec(f"infer:model={model},{NORMALISED}", REG)
    assert pipeline.has_batch_steps
    caplog.set_level(logging.DEBUG, logger="imgstream.ops.builtin.models")
    outcomes = pipeline.run_many(images)
    assert session_runs(caplog, "infer") == [8]
    batch = np.stack(
        [reference_input(im, (32, 32), scale=1 / 255, mean=MEAN, std=STD) for im in images]
    )
    logits, fmap = direct(model, batch)
    for i, (out, outputs) in enumerate(outcomes):
        assert out is images[i]  # the image passes on
        got = outputs["infer"]
        assert set(got) == {"logits", "fmap", "batch"} and got["batch"] == 8
        np.testing.assert_allclose(got["logits"], logits[i], atol=1e-4)
        assert got["fmap"]["sha256"] == hashlib.sha256(fmap[i].tobytes()).hexdigest()


def test_batch_caps_a_run_and_each_image_says_which_run_computed_it(
    model: Path, images: list[np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="imgstream.ops.builtin.models")
    outcomes = parse_spec(f"infer:model={model},batch=3", REG).run_many(images)
    assert session_runs(caplog, "infer") == [3, 3, 2]
    assert [o[1]["infer"]["batch"] for o in outcomes] == [3, 3, 3, 3, 3, 3, 2, 2]
    _, outputs = parse_spec(f"infer:model={model},batch=3", REG).run(images[0])
    assert outputs["infer"]["batch"] == 1  # one image alone: a batch of one


def test_run_sizes_match_runs_from_the_end() -> None:
    assert run_sizes([8], 8) == [8] * 8
    assert run_sizes([4, 4], 6) == [4] * 6  # a fixed batch of 4, the last run padded
    assert run_sizes([8, 1, 1, 1], 3) == [1, 1, 1]  # a first run redone image by image
    assert run_sizes([], 2) == [None, None]


def test_infer_and_ocr_name_the_runtime_providers_and_models_in_lineage(
    model: Path, tmp_path: Path
) -> None:
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    versions = parse_spec(f"gray|infer:model={model}", REG).versions()
    assert versions == {
        "onnxruntime": ort.__version__,
        "onnxruntime.providers": CPU,
        "infer.model_sha256": sha,
    }
    other = classifier(tmp_path / "other.onnx", height="H", width="W")
    two = parse_spec(f"infer:model={model}|infer:model={other},size=16|ocr", REG).versions()
    assert two["infer.model_sha256"] == sha
    assert two["infer.model_sha256#2"] == hashlib.sha256(other.read_bytes()).hexdigest()
    assert len(two["ocr.det_sha256"]) == len(two["ocr.rec_sha256"]) == 64
    assert two["onnxruntime.providers"] == CPU
    assert parse_spec("gray|plates", REG).versions() == {}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("infer", "operation 'infer': parameter 'model' is required: a path or s3:// URI"),
        ("infer:model=/no/such.onnx", "infer: model file not found: /no/such.onnx"),
        ("infer:model={model},size=64", "is 32x32 (w x h); size= asks for 64x64"),
        ("infer:model={model},mean=1/2", "'mean' expects 1 or 3 finite numbers"),
        ("infer:model={model},top=0", "parameter 'top' must be >= 1"),
        ("ocr:min_score=2", "parameter 'min_score' must be <= 1.0"),
    ],
)
def test_a_bad_model_parameter_fails_the_spec_in_one_line(
    model: Path, spec: str, expected: str
) -> None:
    with pytest.raises(SpecError) as excinfo:
        parse_spec(spec.format(model=model), REG)
    message = str(excinfo.value)
    assert expected in message and "\n" not in message and excinfo.value.exit_code == 2


def test_models_and_reading_need_the_whole_image(model: Path) -> None:
    for spec in (f"infer:model={model}", "ocr", "plates:read=true"):
        pipeline = parse_spec(spec, REG)
        assert pipeline.footprint() is None and pipeline.whole_image_steps() == [pipeline.canonical]
    assert parse_spec("plates", REG).footprint() == 0


def test_infer_takes_gray_colour_and_alpha(model: Path, images: list[np.ndarray]) -> None:
    small = [cv2.resize(im, (64, 48)) for im in images[-3:]]
    assert [im.ndim for im in small] == [3, 2, 3] and small[2].shape[2] == 4
    outcomes = parse_spec(f"infer:model={model},rgb=false", REG).run_many(small)
    assert all(len(o[1]["infer"]["logits"]) == 10 for o in outcomes)


def test_ocr_reads_the_micro_batch(caplog: pytest.LogCaptureFixture) -> None:
    rendered = [render(*args) for args in RENDERED[:2]]
    caplog.set_level(logging.DEBUG, logger="imgstream.ops.builtin.models")
    outcomes = parse_spec("ocr", REG).run_many(rendered)
    for (_, outputs), (lines, *_) in zip(outcomes, RENDERED, strict=False):
        got = outputs["ocr"]["lines"]
        assert [line["text"] for line in got] == [word for word, _ in lines]
        assert {"text", "score", "box"} <= set(got[0])
    assert session_runs(caplog, "ocr.det") == [1, 1]
    assert sum(session_runs(caplog, "ocr.rec")) >= 5


def test_plates_read_the_text_of_each_box_across_the_micro_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plates = [plate_image("A123BC"), plate_image("B456EK 77", seed=2)]
    empty = np.full((120, 160, 3), 128, np.uint8)
    pipeline = parse_spec("plates:read=true,action=blur", REG)
    assert pipeline.has_batch_steps
    caplog.set_level(logging.DEBUG, logger="imgstream.ops.builtin.models")
    outcomes = pipeline.run_many([*plates, empty])
    assert session_runs(caplog, "ocr.rec") == [2]  # both boxes in one run
    texts = [[t["text"] for t in o[1]["plates"]["texts"]] for o in outcomes]
    assert texts == [["A123BC"], ["B456EK 77"], []]
    for (out, outputs), img in zip(outcomes, plates, strict=False):
        data = outputs["plates"]
        assert data["count"] == len(data["boxes"]) == len(data["texts"]) == 1
        assert data["texts"][0]["score"] > 0.9
        x, y, w, h = data["boxes"][0]
        changed = (out != img).any(axis=2)
        assert (
            changed[y : y + h, x : x + w].any() and not changed.sum() > w * h
        )  # read, then blurred
    versions = pipeline.versions()
    assert versions["onnxruntime.providers"] == CPU and len(versions["plates.rec_sha256"]) == 64


def test_reading_plates_is_a_batch_step_and_cannot_follow_a_source_state() -> None:
    assert not parse_spec("motion|plates", REG).has_batch_steps
    with pytest.raises(SpecError, match="cannot have both a stateful step"):
        parse_spec("motion|plates:read=true", REG)


def test_batch_when_is_for_batch_operations() -> None:
    with pytest.raises(ValueError, match="batch_when is for a batch operation"):
        op("x", kind="analysis", batch_when=lambda params: True)
