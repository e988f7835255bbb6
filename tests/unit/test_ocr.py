"""``ocr``'s core: PP-OCR from the rapidocr wheel reads rendered words and real photos."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from imgstream.errors import ConfigError
from imgstream.models import ocr as ocr_module
from imgstream.models.ocr import OcrSettings, TextReader, shared_reader
from imgstream.models.runtime import SessionCache
from imgstream.models.textdet import bounding_box, det_size, order_quad, reading_order
from imgstream.models.textrec import CtcDecoder, plan_batches

TEXT = Path(__file__).resolve().parents[1] / "data" / "text"


def render(
    lines: list[tuple[str, float]],
    background: tuple[int, int, int],
    ink: tuple[int, int, int],
    size: tuple[int, int] = (360, 640),
) -> np.ndarray:
    img = np.zeros((*size, 3), np.uint8)
    img[:] = background
    for k, (word, scale) in enumerate(lines):
        origin = (30, 80 + 100 * k)
        cv2.putText(img, word, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, ink, 3, cv2.LINE_AA)
    return img


RENDERED = [
    ([("KAFKA", 2.0), ("stream 42", 1.6)], (255, 255, 255), (0, 0, 0), (360, 640)),
    (
        [("Hello World", 1.8), ("OPEN", 2.2), ("batch", 1.4)],
        (160, 60, 20),
        (0, 230, 255),
        (360, 640),
    ),
    ([("exit 2", 1.5), ("ONNX Runtime", 1.5)], (40, 40, 40), (240, 240, 240), (300, 800)),
]


class Hook:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, what: str, n: int, seconds: float) -> None:
        self.calls.append((what, n))


@pytest.fixture(scope="module")
def hook() -> Hook:
    return Hook()


@pytest.fixture(scope="module")
def reader(hook: Hook) -> TextReader:
    return TextReader(OcrSettings(rec_batch=4), cache=SessionCache(), on_batch=hook)


@pytest.fixture(scope="module")
def rendered() -> list[np.ndarray]:
    return [render(*args) for args in RENDERED]


@pytest.fixture(scope="module")
def read(reader: TextReader, hook: Hook, rendered: list[np.ndarray]) -> list[dict]:
    """One call, as a micro-batch: the three rendered images and a real street sign."""
    hook.calls.clear()
    sign = cv2.imread(str(TEXT / "scenetext01.jpg"))
    return reader.read_text([*rendered, sign])


def texts(result: dict) -> list[str]:
    return [line["text"] for line in result["lines"]]


def test_rendered_words_are_read_exactly_in_reading_order(read: list[dict]) -> None:
    for result, (lines, *_) in zip(read[:3], RENDERED, strict=True):
        assert texts(result) == [word for word, _ in lines]
        for line in result["lines"]:
            assert set(line) == {"text", "score", "box", "points"}
            assert 0.9 <= line["score"] <= 1.0
            _, _, w, h = line["box"]
            assert w > h > 20
            assert bounding_box(np.array(line["points"], np.float32)) == line["box"]


def test_a_street_sign_photo_is_read(read: list[dict]) -> None:
    found = " ".join(texts(read[3])).split()
    for word in ("NOTICE", "DOUBLE", "PARKING", "PROHIBITED", "TIMES"):
        assert word in found


def test_every_box_of_the_micro_batch_is_recognised_in_few_batched_calls(
    read: list[dict], hook: Hook
) -> None:
    det = [n for what, n in hook.calls if what == "ocr.det"]
    rec = [n for what, n in hook.calls if what == "ocr.rec"]
    assert det == [1, 1, 1, 1]  # three sizes, and det_batch=1
    boxes = sum(rec)
    assert boxes >= sum(len(r["lines"]) for r in read) >= 13
    assert len(rec) == math.ceil(boxes / 4)  # rec_batch=4, across the images
    assert rec[:-1] == [4] * (len(rec) - 1)


def test_same_size_images_share_the_detector_call(rendered: list[np.ndarray]) -> None:
    hook = Hook()
    reader = TextReader(OcrSettings(det_batch=8), cache=SessionCache(), on_batch=hook)
    got = reader.read_text([rendered[0], rendered[1], rendered[0]])
    assert [n for what, n in hook.calls if what == "ocr.det"] == [3]
    assert texts(got[0]) == texts(got[2]) == ["KAFKA", "stream 42"]
    assert [n for what, n in hook.calls if what == "ocr.rec"] == [6, 1]  # rec_batch=6


def test_photos_without_text_and_odd_channels(reader: TextReader, photos: list[Path]) -> None:
    images = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in photos]
    assert {im.ndim for im in images} == {2, 3} and any(im.shape[-1] == 4 for im in images)
    got = reader.read_text(images)
    assert len(got) == len(images)
    for result in got:
        assert isinstance(result["lines"], list)
    assert reader.read_text([]) == []


def test_text_inside_given_boxes(reader: TextReader, rendered: list[np.ndarray]) -> None:
    word = cv2.imread(str(TEXT / "scenetext_word01.jpg"))
    h, w = word.shape[:2]
    got = reader.read_in_boxes(
        [word, rendered[0], rendered[1]],
        [[[0, 0, w, h]], [[20, 20, 300, 90], [5, 5, 0, 0], [-50, 100, 400, 120]], []],
    )
    assert got[0] == [{"text": "CHINA", "score": pytest.approx(1.0, abs=0.05)}]
    assert [d["text"] for d in got[1]] == ["KAFKA", "", "stream 42"]
    assert got[1][1] == {"text": "", "score": 0.0}
    assert got[2] == []
    with pytest.raises(ValueError):
        reader.read_in_boxes([word], [])


def test_shared_reader_is_one_per_settings() -> None:
    assert shared_reader() is shared_reader(OcrSettings())
    assert shared_reader(OcrSettings(limit_side=640)).settings.limit_side == 640


def test_lineage_names_the_models_and_providers(reader: TextReader) -> None:
    lineage = reader.lineage()
    assert lineage["providers"] == ["CPUExecutionProvider"]
    assert len(lineage["det_sha256"]) == len(lineage["rec_sha256"]) == 64


def test_a_missing_model_file_is_one_line_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        TextReader(models=str(tmp_path), cache=SessionCache())
    message = str(excinfo.value)
    assert excinfo.value.exit_code == 2 and "\n" not in message
    assert message == (
        f"ocr: the detection model is missing: {tmp_path / 'PP-OCRv6_det_small.onnx'} "
        "(it ships in the rapidocr wheel: pip install 'imgstream[models]')"
    )


def test_without_rapidocr_ocr_says_what_to_install(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        ocr_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "rapidocr" else real(name, *a),
    )
    with pytest.raises(ConfigError) as excinfo:
        TextReader(cache=SessionCache())
    assert str(excinfo.value) == (
        "ocr needs rapidocr (its PP-OCR models) and ONNX Runtime: pip install 'imgstream[models]'"
    )


def test_detector_input_sizes() -> None:
    assert det_size(480, 640, 960) == (480, 640)  # never upscaled
    assert det_size(1080, 1920, 960) == (544, 960)
    assert det_size(10, 3000, 960) == (32, 960)
    assert det_size(100, 150, 960) == (96, 160)


def test_recognition_batches_sort_by_ratio_and_pad_to_the_widest() -> None:
    ratios = [8.0, 1.0, 3.0, 2.5, 12.0]
    plans = plan_batches(ratios, max_batch=2, min_width=160)
    assert [p.indices for p in plans] == [(1, 3), (2, 0), (4,)]
    assert [p.width for p in plans] == [160, 384, 576]


def test_ctc_decoding_merges_repeats_and_drops_blanks() -> None:
    decoder = CtcDecoder(["a", "b"])  # classes: blank, a, b, space
    steps = [1, 1, 0, 1, 2, 2, 3, 0]
    probs = np.full((2, len(steps), 4), 0.01, np.float32)
    for t, k in enumerate(steps):
        probs[0, t, k] = 0.9
    probs[1, :, 0] = 0.9  # all blank
    assert decoder.decode(probs) == [("aab ", pytest.approx(0.9)), ("", 0.0)]


def test_quads_and_reading_order() -> None:
    quad = order_quad(np.array([[10, 20], [50, 22], [9, 5], [49, 7]]))
    assert quad.tolist() == [[9, 5], [49, 7], [50, 22], [10, 20]]
    boxes = [
        np.array([[200, 14], [260, 14], [260, 40], [200, 40]], np.float32),
        np.array([[10, 10], [80, 10], [80, 40], [10, 40]], np.float32),
        np.array([[10, 60], [80, 60], [80, 90], [10, 90]], np.float32),
    ]
    assert reading_order(boxes) == [1, 0, 2]
