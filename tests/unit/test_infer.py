"""``infer``'s core: small real ONNX models built here, checked against ONNX Runtime itself."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, save_model

from imgstream.errors import ConfigError
from imgstream.models.onnx import (
    MAX_VALUES,
    InferSpec,
    Model,
    pack,
    parse_channels,
    shared_model,
)
from imgstream.models.runtime import SessionCache, onnxruntime, read_model

CLASSES = 10
FLOAT = TensorProto.FLOAT
FILTERS = 8


def classifier(
    path: Path,
    *,
    batch: int | str = "N",
    channels: int = 3,
    height: int | str = 32,
    width: int | str = 32,
) -> Path:
    """conv 3x3 -> relu -> global average pool -> gemm: ``logits`` [N, 10] and the
    conv's feature map ``fmap`` [N, 8, H, W] (8 * 32 * 32 values: over MAX_VALUES)."""
    rng = np.random.default_rng(7)
    w = rng.normal(0, 0.5, (FILTERS, channels, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, FILTERS).astype(np.float32)
    gw = rng.normal(0, 0.5, (CLASSES, FILTERS)).astype(np.float32)
    gb = rng.normal(0, 0.1, CLASSES).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["fmap"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["fmap"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "gw", "gb"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, height, width])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, CLASSES]),
            helper.make_tensor_value_info("fmap", TensorProto.FLOAT, [batch, FILTERS, None, None]),
        ],
        [
            helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel()),
            helper.make_tensor("b", TensorProto.FLOAT, b.shape, b.ravel()),
            helper.make_tensor("gw", TensorProto.FLOAT, gw.shape, gw.ravel()),
            helper.make_tensor("gb", TensorProto.FLOAT, gb.shape, gb.ravel()),
        ],
    )
    return save(graph, path)


def identity(
    path: Path, shape: list[int | str], elem: int = TensorProto.FLOAT, extra_input: bool = False
) -> Path:
    """``y = x`` (and ``z = y_in`` with a second input): a model with any input shape."""
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", elem, shape)]
    outputs = [helper.make_tensor_value_info("y", elem, shape)]
    if extra_input:
        nodes.append(helper.make_node("Identity", ["y_in"], ["z"]))
        inputs.append(helper.make_tensor_value_info("y_in", TensorProto.FLOAT, [1]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1]))
    return save(helper.make_graph(nodes, "identity", inputs, outputs), path)


def save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save_model(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "dynamic": classifier(d / "dynamic.onnx"),
        "fixed1": classifier(d / "fixed1.onnx", batch=1),
        "fixed4": classifier(d / "fixed4.onnx", batch=4),
        "gray": classifier(d / "gray.onnx", channels=1),
        "dynamic_hw": classifier(d / "dynamic_hw.onnx", height="H", width="W"),
    }


@pytest.fixture(scope="module")
def images(photos: list[Path]) -> list[np.ndarray]:
    """Eight real photos of different sizes: BGR, one 2-D gray, one BGRA."""
    decoded = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in photos]
    bgr = [im for im in decoded if im.ndim == 3 and im.shape[2] == 3]
    gray = cv2.cvtColor(bgr[0], cv2.COLOR_BGR2GRAY)
    bgra = np.dstack([bgr[1], np.full(bgr[1].shape[:2], 90, np.uint8)])
    out = [*(bgr * 2)[:6], gray, bgra]
    assert len(out) == 8
    return out


def reference_input(
    img: np.ndarray,
    size: tuple[int, int],
    channels: int = 3,
    rgb: bool = True,
    scale: float = 1.0,
    mean: tuple[float, ...] = (0.0,),
    std: tuple[float, ...] = (1.0,),
) -> np.ndarray:
    """The spec's preprocessing written out step by step, independently of the module."""
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    if channels == 1:
        img = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        img = img[:, :, None]
    else:
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        if rgb:
            img = img[:, :, ::-1]
    x = img.astype(np.float32)
    x = (x * np.float32(scale) - np.float32(mean)) / np.float32(std)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def direct(path: Path, batch: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": batch})


class Counter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, what: str, n: int, seconds: float) -> None:
        assert seconds >= 0
        self.calls.append((what, n))


def test_a_batch_of_eight_is_one_session_run_and_equals_onnxruntime(models, images) -> None:
    hook = Counter()
    spec = InferSpec(
        str(models["dynamic"]), scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )
    model = Model(spec, cache=SessionCache(), on_batch=hook)
    got = model.run(images)
    assert hook.calls == [("infer", 8)]
    assert (model.calls, model.images) == (1, 8)
    batch = np.stack(
        [
            reference_input(im, (32, 32), scale=1 / 255, mean=spec.mean, std=spec.std)
            for im in images
        ]
    )
    logits, fmap = direct(models["dynamic"], batch)
    for i, out in enumerate(got):
        assert set(out) == {"logits", "fmap"}
        np.testing.assert_allclose(out["logits"], logits[i], atol=1e-4)
        # 8 x 32 x 32 values: stored as shape, dtype and the hash of the bytes
        assert out["fmap"] == {
            "shape": [FILTERS, 32, 32],
            "dtype": "float32",
            "sha256": hashlib.sha256(np.ascontiguousarray(fmap[i]).tobytes()).hexdigest(),
        }


def test_threads_share_one_model(models, images) -> None:
    model = Model(InferSpec(str(models["dynamic"])), cache=SessionCache())
    want = model.run(images)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: model.run(images), range(8)))
    assert all(g == want for g in got)
    assert (model.calls, model.images) == (9, 72)


def test_importing_the_models_imports_no_runtime() -> None:
    code = (
        "import sys, imgstream, imgstream.models.onnx, imgstream.models.ocr; "
        "print(sorted(m for m in ('onnxruntime', 'rapidocr', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_preprocess_is_the_spec_step_by_step(models, images) -> None:
    spec = InferSpec(str(models["dynamic"]), rgb=False, scale=0.5, mean=(3.0,), std=(2.0,))
    model = Model(spec, cache=SessionCache())
    for img in images:
        want = reference_input(img, (32, 32), rgb=False, scale=0.5, mean=(3.0,), std=(2.0,))
        np.testing.assert_allclose(model.preprocess(img), want, atol=1e-5)
    gray = Model(InferSpec(str(models["gray"])), cache=SessionCache())
    for img in images:
        assert gray.preprocess(img).shape == (1, 32, 32)
        np.testing.assert_allclose(gray.preprocess(img), reference_input(img, (32, 32), 1))


def test_batch_caps_the_images_of_one_run(models, images) -> None:
    hook = Counter()
    model = Model(InferSpec(str(models["dynamic"]), batch=3), cache=SessionCache(), on_batch=hook)
    got = model.run(images)
    assert hook.calls == [("infer", 3), ("infer", 3), ("infer", 2)]
    logits = direct(models["dynamic"], np.stack([reference_input(im, (32, 32)) for im in images]))
    for i, out in enumerate(got):
        np.testing.assert_allclose(out["logits"], logits[0][i], atol=1e-4)


def test_a_fixed_batch_of_one_runs_image_by_image(models, images) -> None:
    hook = Counter()
    model = Model(InferSpec(str(models["fixed1"])), cache=SessionCache(), on_batch=hook)
    got = model.run(images)
    assert hook.calls == [("infer", 1)] * 8
    for img, out in zip(images, got, strict=True):
        (logits, _) = direct(models["fixed1"], reference_input(img, (32, 32))[None])
        np.testing.assert_allclose(out["logits"], logits[0], atol=1e-4)


def test_a_fixed_batch_of_four_runs_in_padded_chunks(models, images) -> None:
    hook = Counter()
    model = Model(InferSpec(str(models["fixed4"])), cache=SessionCache(), on_batch=hook)
    got = model.run(images[:6])
    assert hook.calls == [("infer", 4), ("infer", 4)]
    assert len(got) == 6
    batch = np.stack([reference_input(im, (32, 32)) for im in images[:6]])
    logits = direct(models["dynamic"], batch)[0]
    for i, out in enumerate(got):
        np.testing.assert_allclose(out["logits"], logits[i], atol=1e-4)


def test_outputs_without_the_batch_axis_run_image_by_image(tmp_path: Path, images) -> None:
    """A model whose output is one number for the whole batch cannot be split per image."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["mean"], keepdims=0)],
        "mean",
        [helper.make_tensor_value_info("x", FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("mean", FLOAT, [])],
    )
    hook = Counter()
    model = Model(
        InferSpec(str(save(graph, tmp_path / "mean.onnx"))), cache=SessionCache(), on_batch=hook
    )
    got = model.run(images[:3])
    assert hook.calls == [("infer", 3)] + [("infer", 1)] * 3
    for img, out in zip(images[:3], got, strict=True):
        assert out["mean"] == pytest.approx([float(reference_input(img, (8, 8)).mean())], rel=1e-5)
    hook.calls.clear()
    model.run(images[:2])
    assert hook.calls == [("infer", 1)] * 2


def test_dynamic_height_and_width_take_size(models, images) -> None:
    model = Model(InferSpec(str(models["dynamic_hw"]), w=40, h=24), cache=SessionCache())
    assert (model.input.width, model.input.height) == (40, 24)
    got = model.run(images[:3])
    batch = np.stack([reference_input(im, (40, 24)) for im in images[:3]])
    logits = direct(models["dynamic_hw"], batch)[0]
    for i, out in enumerate(got):
        np.testing.assert_allclose(out["logits"], logits[i], atol=1e-4)


def test_labels_give_the_top_scores(models, images, tmp_path: Path) -> None:
    names = [f"class {i}" for i in range(CLASSES)]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(names) + "\n")
    model = Model(
        InferSpec(str(models["dynamic"]), labels=str(labels), top=3), cache=SessionCache()
    )
    got = model.run(images[:2])
    logits = direct(
        models["dynamic"], np.stack([reference_input(im, (32, 32)) for im in images[:2]])
    )
    for i, out in enumerate(got):
        order = np.argsort(-logits[0][i])[:3]
        assert [d["label"] for d in out["logits"]] == [names[k] for k in order]
        scores = [d["score"] for d in out["logits"]]
        assert scores == sorted(scores, reverse=True)
        np.testing.assert_allclose(scores, logits[0][i][order], atol=1e-4)
        assert "sha256" in out["fmap"]  # only the 2-D output of 10 classes is labelled


def test_pack_keeps_small_tensors_as_values() -> None:
    small = np.array([[0.1, np.nan], [np.inf, -2.5]], np.float32)
    assert pack(small) == [0.1, None, None, -2.5]
    assert pack(np.arange(MAX_VALUES, dtype=np.int64)) == list(range(MAX_VALUES))
    big = np.zeros(MAX_VALUES + 1, np.float32)
    assert pack(big)["shape"] == [MAX_VALUES + 1]
    assert pack(big)["sha256"] == hashlib.sha256(big.tobytes()).hexdigest()


def test_sessions_are_shared_per_model(models) -> None:
    cache = SessionCache()
    a = Model(InferSpec(str(models["dynamic"])), cache=cache)
    b = Model(InferSpec(str(models["dynamic"]), rgb=False), cache=cache)
    Model(InferSpec(str(models["fixed1"])), cache=cache)
    assert a.session is b.session
    assert len(cache) == 2
    assert a.providers == ("CPUExecutionProvider",)
    assert a.lineage()["providers"] == ["CPUExecutionProvider"]
    assert a.lineage()["model_sha256"] == hashlib.sha256(models["dynamic"].read_bytes()).hexdigest()


def test_shared_model_is_one_per_spec(models) -> None:
    spec = InferSpec(str(models["fixed1"]), top=2)
    assert shared_model(spec) is shared_model(InferSpec(str(models["fixed1"]), top=2))
    assert shared_model(spec) is not shared_model(InferSpec(str(models["fixed1"]), top=3))


def test_an_s3_model_is_read_through_the_object_store(models, images) -> None:
    class Store:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def get(self, url, max_bytes: int) -> bytes:
            self.asked.append(str(url))
            return models["dynamic"].read_bytes()

    store = Store()
    model = Model(InferSpec("s3://bucket/m/model.onnx"), store=store, cache=SessionCache())
    assert store.asked == ["s3://bucket/m/model.onnx"]
    assert len(model.run(images[:2])) == 2


def one_line_error(excinfo: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    assert excinfo.value.exit_code == 2
    return message


@pytest.mark.parametrize(
    ("shape", "elem", "spec_extra", "expected"),
    [
        (["N", 3, 32], FLOAT, {}, "has rank 3; infer feeds NCHW images (rank 4)"),
        (["N", 4, 32, 32], FLOAT, {}, "must have 1 or 3 channels on axis 1"),
        (["N", 32, 32, 3], FLOAT, {}, "1 or 3 channels on axis 1 (NHWC is not supported)"),
        (["N", 3, "H", "W"], FLOAT, {}, "has a dynamic height or width: give size="),
        (["N", 3, 32, 32], FLOAT, {"size": 64}, "is 32x32 (w x h); size= asks for 64x64"),
        (["N", 3, 32, 32], TensorProto.INT64, {}, "is tensor(int64); infer feeds tensor(float)"),
        (["N", 1, 8, 8], FLOAT, {"mean": (1.0, 2.0, 3.0)}, "'mean' has 3 values; the model has 1"),
    ],
)
def test_a_model_whose_input_does_not_fit_fails_at_start_up(
    tmp_path: Path, shape: list, elem: int, spec_extra: dict, expected: str
) -> None:
    path = identity(tmp_path / "m.onnx", shape, elem)
    with pytest.raises(ConfigError) as excinfo:
        Model(InferSpec(str(path), **spec_extra), cache=SessionCache())
    assert expected in one_line_error(excinfo)


def test_missing_or_broken_models_fail_at_start_up(tmp_path: Path, models) -> None:
    with pytest.raises(ConfigError) as excinfo:
        Model(InferSpec(str(tmp_path / "nope.onnx")), cache=SessionCache())
    assert one_line_error(excinfo) == f"infer: model file not found: {tmp_path / 'nope.onnx'}"
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ConfigError) as excinfo:
        Model(InferSpec(str(junk)), cache=SessionCache())
    assert one_line_error(excinfo).startswith(f"infer: cannot load the model {junk}: ")
    two = identity(tmp_path / "two.onnx", ["N", 3, 8, 8], extra_input=True)
    with pytest.raises(ConfigError) as excinfo:
        Model(InferSpec(str(two)), cache=SessionCache())
    assert "the model has 2 inputs (x, y_in); infer feeds one" in one_line_error(excinfo)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    with pytest.raises(ConfigError) as excinfo:
        Model(InferSpec(str(models["dynamic"]), labels=str(labels)), cache=SessionCache())
    assert "labels= has 3 labels but no 2-D output has that many classes" in one_line_error(excinfo)


def test_spec_parameters() -> None:
    assert parse_channels("mean", "0.485/0.456/0.406") == (0.485, 0.456, 0.406)
    assert parse_channels("std", 2) == (2.0,)
    spec = InferSpec.from_params({"model": "m.onnx", "mean": "1/2/3", "std": None, "size": 8})
    assert (spec.mean, spec.std, spec.input_size) == ((1.0, 2.0, 3.0), (1.0,), (8, 8))
    for params, expected in [
        ({"model": "m", "mean": "a/b"}, "'mean' expects a number or numbers joined by '/'"),
        ({"model": "m", "std": "1/2"}, "'std' expects 1 or 3 finite numbers"),
        ({"model": "m", "std": "0"}, "'std' must not be 0"),
        ({"model": "m", "size": 8, "w": 4, "h": 4}, "give size= or w= and h=, not both"),
        ({"model": "m", "w": 4}, "w= and h= go together"),
        ({"model": ""}, "parameter 'model' is required"),
        ({"model": "m", "batch": -1}, "'batch' must be >= 0"),
    ]:
        with pytest.raises(ConfigError) as excinfo:
            InferSpec.from_params(params)
        assert expected in one_line_error(excinfo)


def test_without_onnxruntime_infer_says_what_to_install(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    source = read_model(str(identity(tmp_path / "m.onnx", ["N", 3, 8, 8])), "infer")
    with pytest.raises(ConfigError) as excinfo:
        SessionCache().load(source, "infer")
    assert one_line_error(excinfo) == "infer needs ONNX Runtime: pip install 'imgstream[models]'"
    with pytest.raises(ConfigError):
        onnxruntime("ocr")
