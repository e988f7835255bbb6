"""The Python API (imgstream.Pipeline, process_folder, operations): the worker's code path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import imgstream
from imgstream.ops import build_registry
from imgstream.ops.pipeline import parse_spec
from tests.helpers import PHOTOS


def _photo() -> np.ndarray:
    img = cv2.imread(str(sorted(PHOTOS.glob("*.jpg"))[0]))
    assert img is not None
    return img


def test_parse_apply_equals_the_worker_pipeline() -> None:
    img = _photo()
    p = imgstream.Pipeline.parse("gray|blur:k=3")
    worker = parse_spec("gray|blur:k=3", build_registry())
    assert p.canonical == worker.canonical and p.hash == worker.hash
    assert p.steps == tuple(s.canonical() for s in worker.steps)
    out = p.apply(img)
    assert out.shape == img.shape[:2]
    assert np.array_equal(out, worker.run(img)[0])
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(out, cv2.GaussianBlur(gray, (3, 3), 0))


def test_run_gives_outputs_and_run_many_one_outcome_per_image() -> None:
    img = _photo()
    p = imgstream.Pipeline.parse("stats|gray")
    out, outputs = p.run(img)
    assert out.ndim == 2 and set(outputs) == {"stats"}
    many = p.run_many([img, img[:10, :10]])
    assert len(many) == 2
    first = many[0]
    assert not isinstance(first, imgstream.ImageError)
    assert np.array_equal(first[0], out) and first[1] == outputs


def test_a_bad_spec_is_a_spec_error_with_exit_code_2() -> None:
    with pytest.raises(imgstream.SpecError, match=r"unknown operation 'grey'.*gray") as err:
        imgstream.Pipeline.parse("grey")
    assert err.value.exit_code == 2
    with pytest.raises(imgstream.SpecError, match="'k'"):
        imgstream.Pipeline.parse("blur:k=x")


def test_equal_specs_are_equal_pipelines() -> None:
    a = imgstream.Pipeline.parse("resize:w=640|gray")
    b = imgstream.Pipeline.parse(" resize : w=640 | gray ".replace(" : ", ":"))
    assert a == b and hash(a) == hash(b) and repr(a).startswith("Pipeline(")


def test_stateful_steps_keep_their_state_in_the_callers_dict() -> None:
    p = imgstream.Pipeline.parse("motion")
    assert p.stateful
    state: dict[str, dict[str, object]] = {}
    frame = np.zeros((60, 80, 3), np.uint8)
    first = p.run(frame, state=state)[1]["motion"]
    assert first["first"] is True and state
    moved = frame.copy()
    moved[20:50, 20:60] = 255
    second = p.run(moved, state=state)[1]["motion"]
    assert second.get("first") is not True and second["boxes"]


def test_operations_lists_the_registry() -> None:
    ops = imgstream.operations(plugins=False)
    assert [o.name for o in ops] == [o.name for o in build_registry(())]
    assert {"gray", "blur", "motion", "stats"} <= {o.name for o in ops}


def test_process_folder_decodes_like_the_worker_and_writes_its_paths(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted(PHOTOS.iterdir())[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "notes.txt").write_text("not an image\n")
    p = imgstream.Pipeline.parse("gray")
    results = list(imgstream.process_folder(folder, p, out=tmp_path / "out", batch_size=2))
    assert [Path(r.path).name for r in results] == sorted(x.name for x in folder.iterdir())
    bad = [r for r in results if not r.ok]
    assert len(bad) == 1 and bad[0].error is not None
    assert bad[0].error.type == "unsupported_format" and bad[0].output_path is None
    for r in results:
        if r.ok:
            assert r.source == "photos" and r.image is not None
            assert r.output_path == str(tmp_path / "out" / p.hash / "photos" / f"{r.id}.png")
            assert np.array_equal(cv2.imread(r.output_path, cv2.IMREAD_UNCHANGED), r.image)
            assert np.array_equal(r.image, p.apply(imgstream.read_image(r.path)))


def test_process_folder_refuses_what_is_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        next(imgstream.process_folder(tmp_path / "nope", "gray"))
    with pytest.raises(ValueError, match="output_format"):
        next(imgstream.process_folder(tmp_path, "gray", output_format="gif"))


def test_the_api_is_lazy_and_typed() -> None:
    code = (
        "import sys, imgstream; assert 'Pipeline' in dir(imgstream); "
        "print(sorted(m for m in sys.modules if m.startswith(('numpy', 'cv2', 'imgstream.api'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
    assert set(imgstream.__all__) <= set(dir(imgstream))
    with pytest.raises(AttributeError):
        _ = imgstream.NoSuchThing  # type: ignore[attr-defined]
    assert (Path(imgstream.__file__).parent / "py.typed").is_file()


def test_the_version_is_written_once() -> None:
    from importlib.metadata import version

    assert version("imgstream") == imgstream.__version__
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and "\nversion =" not in text.split("[tool")[0]
