"""Every operation equals the OpenCV call it names (or an independent computation)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from imgstream.ops import build_registry
from imgstream.ops.builtin.analysis import hamming
from imgstream.ops.pipeline import parse_spec

REG = build_registry()


def run(spec: str, img: np.ndarray):
    return parse_spec(spec, REG).run(img)


@pytest.fixture(scope="module")
def images(photos) -> dict[str, np.ndarray]:
    """Real photos as decoded (BGR), one as 1-channel gray, one as BGRA."""
    out = {p.name: cv2.imread(str(p)) for p in photos}
    first = next(iter(out.values()))
    out["gray-2d"] = cv2.cvtColor(first, cv2.COLOR_BGR2GRAY)
    alpha = np.full(first.shape[:2], 200, np.uint8)
    out["bgra"] = np.dstack([first, alpha])
    return out


def gray_of(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img
    return cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2GRAY)


def bgr_of(img: np.ndarray) -> np.ndarray:
    return img[:, :, :3] if img.ndim == 3 and img.shape[2] == 4 else img


def ref_equalize(img):
    if img.ndim == 2:
        return cv2.equalizeHist(img)
    ycc = cv2.cvtColor(bgr_of(img), cv2.COLOR_BGR2YCrCb)
    ycc[:, :, 0] = cv2.equalizeHist(ycc[:, :, 0])
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR)


def ref_clahe(img, clip=2.0, tile=8):
    tool = cv2.createCLAHE(clipLimit=clip, tileGridSize=(tile, tile))
    if img.ndim == 2:
        return tool.apply(img)
    lab = cv2.cvtColor(bgr_of(img), cv2.COLOR_BGR2Lab)
    lab[:, :, 0] = tool.apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_Lab2BGR)


def ref_resize(img, w):
    h0, w0 = img.shape[:2]
    h = max(1, int(h0 * w / w0 + 0.5))
    interp = cv2.INTER_AREA if w * h < w0 * h0 else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


CASES = {
    "equalize": ref_equalize,
    "clahe:clip=2.0,tile=8": ref_clahe,
    "clahe:clip=4,tile=4": lambda img: ref_clahe(img, 4.0, 4),
    "canny:lo=100,hi=200": lambda img: cv2.Canny(gray_of(img), 100, 200),
    "threshold:method=otsu": lambda img: cv2.threshold(
        gray_of(img), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU
    )[1],
    "threshold:t=90": lambda img: cv2.threshold(gray_of(img), 90, 255, cv2.THRESH_BINARY)[1],
    "threshold:method=adaptive,block=11,c=2": lambda img: cv2.adaptiveThreshold(
        gray_of(img), 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 11, 2
    ),
    "resize:w=320": lambda img: ref_resize(img, 320),
    "resize:w=1200": lambda img: ref_resize(img, 1200),
    "resize:w=100,h=50": lambda img: cv2.resize(img, (100, 50), interpolation=cv2.INTER_AREA),
    "gray|blur:k=5": lambda img: cv2.GaussianBlur(gray_of(img), (5, 5), 0),
    "blur:k=7": lambda img: cv2.GaussianBlur(img, (7, 7), 0),
    "median:k=5": lambda img: cv2.medianBlur(img, 5),
    "bilateral": lambda img: cv2.bilateralFilter(bgr_of(img), 9, 75, 75),
    "sobel:dx=1,dy=0,k=3": lambda img: cv2.convertScaleAbs(
        cv2.Sobel(gray_of(img), cv2.CV_16S, 1, 0, ksize=3)
    ),
    "laplacian:k=3": lambda img: cv2.convertScaleAbs(
        cv2.Laplacian(gray_of(img), cv2.CV_16S, ksize=3)
    ),
    "morph:op=open,k=3": lambda img: cv2.morphologyEx(
        img, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
    ),
    "morph:op=dilate,k=5": lambda img: cv2.dilate(img, np.ones((5, 5), np.uint8)),
    "morph:op=close,k=5": lambda img: cv2.morphologyEx(
        img, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (5, 5))
    ),
    "morph:op=erode,k=3": lambda img: cv2.erode(img, np.ones((3, 3), np.uint8)),
    "rotate:deg=90": lambda img: cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE),
    "rotate:deg=180": lambda img: cv2.rotate(img, cv2.ROTATE_180),
    "rotate:deg=270": lambda img: cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE),
    "flip:axis=h": lambda img: img[:, ::-1],
    "flip:axis=v": lambda img: img[::-1],
    "crop:x=10,y=20,w=50,h=40": lambda img: img[20:60, 10:60],
    "normalize": lambda img: cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX),
}


@pytest.mark.parametrize("spec", list(CASES))
def test_operation_equals_opencv(spec, images) -> None:
    for name, img in images.items():
        got, _ = run(spec, img.copy())
        expected = CASES[spec](img.copy())
        assert got.shape == expected.shape, (spec, name)
        assert np.array_equal(got, expected), (spec, name)


@pytest.mark.parametrize(("op", "param"), [("morph", "op"), ("rotate", "deg"), ("flip", "axis")])
def test_the_table_covers_every_choice(op, param) -> None:
    # A choice added to the op without a row here would go untested.
    (choices,) = [p.choices for p in REG.get(op).params if p.name == param]
    covered = {
        dict(kv.split("=") for kv in spec.split(":")[1].split(","))[param]
        for spec in CASES
        if spec.split(":")[0] == op
    }
    assert covered == {str(c) for c in choices}


def test_denoise_equals_opencv(images) -> None:
    img = images["astronaut.jpg"][:128, :128]
    got, _ = run("denoise:h=10", img)
    assert np.array_equal(got, cv2.fastNlMeansDenoisingColored(img, None, 10, 10, 7, 21))
    g = gray_of(img)
    assert np.array_equal(run("denoise:h=5", g)[0], cv2.fastNlMeansDenoising(g, None, 5, 7, 21))


def test_gamma_against_the_formula(images) -> None:
    img = images["coffee.jpg"]
    for g in (0.5, 1.0, 2.2):
        got, _ = run(f"gamma:g={g}", img)
        expected = np.clip(np.rint(255 * (img / 255.0) ** (1 / g)), 0, 255).astype(np.uint8)
        assert np.array_equal(got, expected)


def test_sharpen_against_the_formula(images) -> None:
    img = images["chelsea.jpg"]
    got, _ = run("sharpen:amount=1.5,sigma=2", img)
    blurred = cv2.GaussianBlur(img, (0, 0), 2.0).astype(np.float64)
    expected = np.clip(np.rint(2.5 * img - 1.5 * blurred), 0, 255)
    assert np.abs(got.astype(np.int16) - expected).max() <= 1  # addWeighted rounds once


def test_resize_rules() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    assert run("resize:h=50", img)[0].shape == (50, 100, 3)
    assert run("resize:scale=0.5", img)[0].shape == (50, 100, 3)
    assert run("resize:max=100", img)[0].shape == (50, 100, 3)
    assert run("resize:max=1000", img)[0].shape == (100, 200, 3)  # never enlarges


def test_kmeans_is_deterministic_and_quantises(images) -> None:
    img = cv2.resize(images["coffee.jpg"], (160, 120))
    a, data = run("kmeans:k=4", img)
    b, _ = run("kmeans:k=4", img)
    assert np.array_equal(a, b)
    colours = {tuple(c) for c in a.reshape(-1, 3)}
    assert len(colours) <= 4
    assert colours == {tuple(c) for c in data["kmeans"]["centers"]}
    # every pixel gets its nearest centre
    centers = np.array(data["kmeans"]["centers"], np.float64)
    dist = ((img.reshape(-1, 1, 3).astype(np.float64) - centers[None]) ** 2).sum(-1)
    nearest = centers[dist.argmin(1)].astype(np.uint8)
    assert (nearest == a.reshape(-1, 3)).all(axis=1).mean() > 0.99


def test_stats_against_numpy(images) -> None:
    img = images["rocket.jpg"]
    out, data = run("stats", img)
    assert out is img
    s = data["stats"]
    for c in range(3):
        ch = img[:, :, c].astype(np.float64)
        assert s["channels"][c]["mean"] == pytest.approx(ch.mean())
        assert s["channels"][c]["std"] == pytest.approx(ch.std())
        assert (s["channels"][c]["min"], s["channels"][c]["max"]) == (ch.min(), ch.max())
    g = gray_of(img).astype(np.float64)
    assert s["brightness"] == pytest.approx(g.mean())
    assert s["contrast"] == pytest.approx(g.std())
    lap = cv2.Laplacian(gray_of(img), cv2.CV_64F)
    assert s["sharpness"] == pytest.approx(lap.var())


def test_hist_against_numpy(images) -> None:
    img = images["camera.png"]
    _, data = run("hist:bins=16", img)
    for c in range(3):
        expected = np.bincount(img[:, :, c].ravel() // 16, minlength=16)
        assert data["hist"]["channels"][c] == expected.tolist()
    _, data = run("gray|hist:bins=8", img)
    assert len(data["hist"]["channels"]) == 1 and sum(data["hist"]["channels"][0]) == img.size // 3


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    m[0] /= np.sqrt(2.0)
    return m


def test_phash_against_an_independent_dct_and_near_duplicates(images) -> None:
    img = images["astronaut.jpg"]
    _, data = run("phash", img)
    small = cv2.resize(gray_of(img), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64)
    d = _dct_matrix(32)
    low = (d @ small @ d.T)[:8, :8]
    bits = "".join("1" if v > np.median(low) else "0" for v in low.ravel())
    assert data["phash"]["hash"] == f"{int(bits, 2):016x}"
    _, jpeg = cv2.imencode(".jpg", cv2.resize(img, (300, 300)), [cv2.IMWRITE_JPEG_QUALITY, 60])
    near = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    assert hamming(data["phash"]["hash"], run("phash", near)[1]["phash"]["hash"]) <= 6
    other = run("phash", images["coffee.jpg"])[1]["phash"]["hash"]
    assert hamming(data["phash"]["hash"], other) >= 16


def test_contours_count_objects() -> None:
    img = np.zeros((100, 200), np.uint8)
    cv2.rectangle(img, (10, 10), (39, 29), 255, -1)
    cv2.circle(img, (150, 50), 20, 255, -1)
    cv2.rectangle(img, (80, 80), (82, 82), 255, -1)  # too small
    out, data = run("contours:min_area=50", img)
    assert out is img
    assert data["contours"]["count"] == 2
    assert [10, 10, 30, 20] in data["contours"]["boxes"]


def test_qr_decodes_a_generated_code() -> None:
    code = cv2.QRCodeEncoder.create().encode("imgstream")
    code = cv2.resize(code, None, fx=8, fy=8, interpolation=cv2.INTER_NEAREST)
    code = cv2.copyMakeBorder(code, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=255)
    _, data = run("qr", cv2.cvtColor(code, cv2.COLOR_GRAY2BGR))
    assert data["qr"]["found"] and data["qr"]["text"] == "imgstream"
    assert len(data["qr"]["points"]) == 4
    _, none = run("qr", np.full((50, 50, 3), 255, np.uint8))
    assert not none["qr"]["found"]


def test_faces_equal_detect_multiscale_and_blur_stays_inside(images) -> None:
    img = images["astronaut.jpg"]
    _, data = run("faces", img)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    expected = cascade.detectMultiScale(gray_of(img), 1.1, 5, minSize=(30, 30))
    assert data["faces"]["boxes"] == [list(map(int, b)) for b in expected]
    assert data["faces"]["count"] >= 1
    out, data = run("faces:action=blur", img)
    mask = np.zeros(img.shape[:2], bool)
    for x, y, w, h in data["faces"]["boxes"]:
        mask[y : y + h, x : x + w] = True
    changed = (out != img).any(axis=2)
    assert changed.any() and not (changed & ~mask).any()
    drawn, _ = run("faces:action=draw", img)
    assert (drawn != img).any()


def test_plates_run_with_their_cascade(images) -> None:
    img = images["rocket.jpg"]
    _, data = run("plates:neighbors=3", img)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_russian_plate_number.xml")
    expected = cascade.detectMultiScale(gray_of(img), 1.1, 3, minSize=(20, 20))
    assert data["plates"]["boxes"] == [list(map(int, b)) for b in expected]


def test_plates_without_read_keep_their_form_and_run_image_by_image() -> None:
    # read= came after plates' pipelines had output folders: without it nothing moves.
    for spec in ("plates", "plates:read=false", "plates:read=0,neighbors=3"):
        pipeline = parse_spec(spec, REG)
        assert pipeline.canonical == "plates:action=none,min=20,neighbors=3,scale=1.1"
        assert pipeline.hash == "f48147e0fa27"
        assert not pipeline.has_batch_steps  # a batch of one per image, in the image threads
    assert parse_spec("plates:read=true", REG).canonical == (
        "plates:action=none,min=20,neighbors=3,read=true,scale=1.1"
    )


def test_every_registered_operation_runs_on_gray_colour_and_alpha(images) -> None:
    small = {k: cv2.resize(v, (64, 48)) for k, v in images.items() if k in ("gray-2d", "bgra")}
    small["bgr"] = cv2.resize(images["coffee.jpg"], (64, 48))
    for op in REG:
        if op.name == "infer":
            continue  # it needs a model: test_models_ops runs it on gray, colour and alpha
        spec = op.name + (":w=32" if op.name == "resize" else "")
        for name, img in small.items():
            out, _ = run(spec, img.copy())
            assert out.dtype == np.uint8 and out.size, (spec, name)
