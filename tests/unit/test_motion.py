"""motion and dedupe against the issue's definition, written out literally here."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from imgstream.errors import ImageError
from imgstream.ops import build_registry
from imgstream.ops.pipeline import parse_spec
from tests.helpers import PHOTOS


def reference_motion(frames, width=320, blur=21, alpha=0.05, threshold=25, min_area=100):
    """The definition, step by step, with nothing shared with the implementation."""
    state = None
    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        small = frame
        if w > width:
            small = cv2.resize(
                frame, (width, int(h * width / w + 0.5)), interpolation=cv2.INTER_AREA
            )
        g = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (blur, blur), 0)
        if state is None:
            state = g.astype(np.float32)
            out.append({"first": True, "ratio": 0.0, "boxes": []})
            continue
        diff = cv2.absdiff(g, cv2.convertScaleAbs(state))
        mask = cv2.threshold(diff, threshold, 255, cv2.THRESH_BINARY)[1]
        mask = cv2.dilate(mask, None, iterations=2)
        contours = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
        boxes = sorted(
            list(cv2.boundingRect(c)) for c in contours if cv2.contourArea(c) >= min_area
        )
        ratio = round(cv2.countNonZero(mask) / mask.size, 6)
        cv2.accumulateWeighted(g, state, alpha)
        out.append({"first": False, "ratio": ratio, "boxes": boxes})
    return out


def _walk(n: int = 12) -> list[np.ndarray]:
    """A real photo with a darker block moving over it, a little noise each frame."""
    base = cv2.imread(str(PHOTOS / "coffee.jpg"))
    base = cv2.resize(base, (640, 400), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(3)
    frames = []
    for i in range(n):
        frame = base.copy()
        x = 40 + 45 * i
        frame[120:260, x : x + 60] //= 3
        noise = rng.integers(-3, 4, frame.shape, dtype=np.int16)
        frames.append(np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    return frames


def test_motion_equals_the_definition_frame_by_frame() -> None:
    frames = _walk()
    pipeline = parse_spec("motion", build_registry(()))
    state: dict = {}
    got = [pipeline.run(f, None, state)[1]["motion"] for f in frames]
    want = reference_motion(frames)
    for g, w in zip(got, want, strict=True):
        assert {k: g[k] for k in ("first", "ratio", "boxes")} == w
        assert g["scale"] == 2.0 and g["kept"] is True
    assert any(g["boxes"] for g in got), "the moving block was never seen"


@pytest.mark.parametrize("spec", ["motion:width=100,blur=5,min_area=10", "motion:width=1000"])
def test_other_parameters_and_no_resize(spec) -> None:
    frames = _walk(6)
    pipeline = parse_spec(spec, build_registry(()))
    params = dict(pipeline.steps[0].params)
    del params["action"]
    state: dict = {}
    got = [pipeline.run(f, None, state)[1]["motion"] for f in frames]
    want = reference_motion(frames, **params)
    assert [{k: g[k] for k in ("first", "ratio", "boxes")} for g in got] == want


def test_gate_keeps_only_frames_with_motion_and_draw_draws_the_boxes() -> None:
    frames = _walk(5)
    frames[2] = frames[1].copy()  # nothing moved
    gate = parse_spec("motion:action=gate,alpha=1.0", build_registry(()))
    state: dict = {}
    kept = [gate.run(f, None, state)[1]["motion"]["kept"] for f in frames]
    assert kept == [False, True, False, True, True]
    draw = parse_spec("motion:action=draw", build_registry(()))
    state = {}
    images = [draw.run(f, None, state)[0] for f in frames[:2]]
    assert np.array_equal(images[0], frames[0])  # the first frame: no boxes
    assert not np.array_equal(images[1], frames[1])
    assert (images[1] == (0, 255, 0)).all(axis=2).any()


def test_dedupe_marks_frames_close_to_the_last_kept_one() -> None:
    frames = _walk(3)
    pipeline = parse_spec("dedupe:bits=6", build_registry(()))
    state: dict = {}
    a = pipeline.run(frames[0], None, state)[1]["dedupe"]
    again = pipeline.run(frames[0], None, state)[1]["dedupe"]
    other = pipeline.run(cv2.flip(frames[0], 1), None, state)[1]["dedupe"]
    assert (a["duplicate"], a["distance"], a["kept"]) == (False, None, True)
    assert (again["duplicate"], again["distance"], again["kept"]) == (True, 0, False)
    assert other["duplicate"] is False and other["distance"] > 6


def test_a_stateful_step_that_fails_leaves_the_state_as_it_was() -> None:
    pipeline = parse_spec("motion", build_registry(()))
    frames = _walk(3)
    state: dict = {}
    pipeline.run(frames[0], None, state)
    before = state["0:motion"]["background"].copy()
    with pytest.raises(ImageError):  # op_error: an empty frame
        pipeline.run(np.zeros((0, 0, 3), np.uint8), None, state)
    np.testing.assert_array_equal(state["0:motion"]["background"], before)


def test_a_pipeline_cannot_be_both_stateful_and_batched() -> None:
    from imgstream.errors import SpecError

    registry = build_registry(())
    assert parse_spec("motion|dedupe", registry).stateful
    assert not parse_spec("gray", registry).stateful
    with pytest.raises(SpecError):
        import imgstream
        from imgstream.ops.adapters import operation

        @imgstream.op("together", kind="batch")
        def together(images):
            return images

        registry.add(operation(together))
        parse_spec("motion|together", registry)
