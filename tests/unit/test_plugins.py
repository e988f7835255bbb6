"""Plugin operations: signature -> parameters, entry points -> registry, batches -> run_many.

Built-ins go through the same decorator and the same registry building;
tests/unit/test_ops.py and test_pipeline.py hold them to their old results,
canonical forms and hashes.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pytest

import imgstream
from imgstream import Arg
from imgstream.errors import OP_ERROR, ConfigError, ImageError, SpecError
from imgstream.ops import Registry, build_registry
from imgstream.ops.adapters import operation
from imgstream.ops.decorator import mark_of
from imgstream.ops.pipeline import parse_spec
from imgstream.tiling import Box, TileView
from tests.fixtures.plugins import entry_points_in, write_plugin

# -- the signature is the schema ---------------------------------------------------------


@imgstream.op("levels")
def levels(
    img: np.ndarray,
    *,
    n: Annotated[int, Arg("levels", min=2, max=256)] = 4,
    mode: Literal["floor", "round"] = "floor",
    gain: float = 1,
    flag: bool = False,
    label: str = "x",
    size: int | None = None,
) -> np.ndarray:
    """Quantise.

    More words, shown by ``imgstream ops levels``.
    """
    return img


def test_keyword_only_arguments_are_the_parameters() -> None:
    op = operation(levels)
    got = [(p.name, p.type, p.default, p.choices, p.min, p.max, p.help) for p in op.params]
    assert got == [
        ("n", int, 4, None, 2, 256, "levels"),
        ("mode", str, "floor", ("floor", "round"), None, None, ""),
        ("gain", float, 1.0, None, None, None, ""),
        ("flag", bool, False, None, None, None, ""),
        ("label", str, "x", None, None, None, ""),
        ("size", int, None, None, None, None, ""),
    ]
    assert type(op.params[2].default) is float  # gain=1 and gain=1.0: one canonical form
    assert (op.help, op.details) == ("Quantise.", "More words, shown by ``imgstream ops levels``.")
    assert op.kind == "image" and op.dist is None and op.footprint({}) is None


def test_the_decorator_only_marks_the_function() -> None:
    img = np.zeros((2, 2), np.uint8)
    assert levels(img, n=3) is img  # still the plain function
    mark = mark_of(levels)
    assert mark is not None and (mark.name, mark.kind) == ("levels", "image")


def test_plugin_parameters_validate_exactly_like_the_builtins() -> None:
    reg = Registry((operation(levels), *build_registry(())))
    cases = [
        ("levels:q=1", "operation 'levels' has no parameter 'q'; valid: n, mode, gain, flag"),
        ("levels:n=x", "operation 'levels': parameter 'n' expects int, got 'x'"),
        ("levels:n=1", "operation 'levels': parameter 'n' must be >= 2, got 1"),
        ("levels:mode=ceil", "parameter 'mode' must be one of floor, round, got 'ceil'"),
        ("levels:flag=maybe", "parameter 'flag' expects bool"),
        ("levelz", "unknown operation 'levelz'; valid: bilateral, blur,"),
    ]
    for spec, message in cases:
        with pytest.raises(SpecError) as info:
            parse_spec(spec, reg)
        assert message in str(info.value), spec
        assert info.value.exit_code == 2
    pipeline = parse_spec("levels:gain=2,n=8,mode=round,size=3", reg)
    assert pipeline.canonical == "levels:flag=false,gain=2.0,label=x,mode=round,n=8,size=3"
    assert parse_spec(pipeline.canonical, reg) == pipeline


def _bad(signature: str, *, kind: str = "image") -> str:
    namespace: dict[str, Any] = {}
    exec(  # a module of its own, as a plugin's would be
        "from typing import Annotated, Literal\nfrom imgstream import Arg\n"
        f"def fn{signature}:\n    return img\n",
        namespace,
    )
    with pytest.raises(TypeError) as info:
        operation(imgstream.op("bad", kind=kind)(namespace["fn"]))
    return str(info.value)


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        ("(img, *, k: int)", "parameter 'k' needs a default"),
        ("(img, *, k: list = [])", "annotate it int, float, bool, str or Literal"),
        ("(img, *, k=3)", "annotate it int"),
        ("(img, *args, k: int = 1)", "*args and **kwargs"),
        ("(img, other, *, k: int = 1)", "takes one positional argument"),
        ("(*, k: int = 1)", "takes one positional argument"),
        ("(img, *, k: Literal['a', 'b'] = 'c')", "parameter 'k': the default is not valid"),
        ("(img, *, k: Literal['a', 1] = 'a')", "Literal choices must all be"),
        ("(img, *, k: int = None)", "the default None needs 'int | None'"),
        ("(img, *, k: int = 1.5)", "the default 1.5 is not a int"),
        ("(img, *, k: Annotated[int, Arg(min=2)] = 1)", "must be >= 2"),
        ("(img, *, k: 'Missing' = 1)", "name 'Missing' is not defined"),
    ],
)
def test_a_signature_the_schema_cannot_read_names_the_parameter(signature, message) -> None:
    text = _bad(signature)
    assert text.startswith("@imgstream.op('bad')") and message in text


def test_the_decorator_refuses_bad_names_and_kinds() -> None:
    with pytest.raises(ValueError, match="a name is letters"):
        imgstream.op("a|b")
    with pytest.raises(ValueError, match="kind must be one of image, analysis, batch"):
        imgstream.op("a", kind="model")


def test_import_imgstream_loads_neither_numpy_nor_opencv_nor_an_operation() -> None:
    code = (
        "import sys, imgstream; assert imgstream.op and imgstream.Arg; "
        "print(sorted(m for m in sys.modules if m.startswith(('numpy', 'cv2', "
        "'importlib.metadata', 'imgstream.ops'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == str(
        ["imgstream.ops", "imgstream.ops.decorator", "imgstream.ops.registry"]
    )


def test_every_builtin_is_defined_through_the_decorator() -> None:
    from imgstream.ops.builtin import (
        analysis,
        color,
        detect,
        edges,
        enhance,
        filters,
        geometry,
        models,
        motion,
        segment,
    )

    families = (color, enhance, geometry, filters, edges, segment, analysis, detect, motion, models)
    marked = {
        mark.name
        for family in families
        for value in vars(family).values()
        if (mark := mark_of(value)) is not None
    }
    assert marked == {op.name for op in build_registry(())}
    assert len(marked) >= 28


# -- entry points -----------------------------------------------------------------------

TOY = '''
from typing import Annotated, Literal
import numpy as np
import imgstream
from imgstream import Arg

@imgstream.op("invert_{tag}", footprint=0)
def invert(img, *, channels: Literal["all", "first"] = "all"):
    """Invert."""
    out = 255 - img
    if channels == "first":
        out[..., 1:] = img[..., 1:]
    return out

@imgstream.op("mean_{tag}", kind="analysis")
def mean(img, *, digits: Annotated[int, Arg(min=0)] = 1):
    return {{"mean": round(float(img.mean()), digits)}}

def helper(img):
    return img
'''


def _toy(site: Path, version: str = "0.1.0", dist: str = "Toy_Plugin") -> tuple[str, Path]:
    tag = uuid.uuid4().hex[:8]
    module = f"toy_{tag}"
    write_plugin(site, dist, version, {module: TOY.format(tag=tag)}, {"toy": module})
    return tag, site


def test_plugin_operations_come_from_entry_points_with_dist_and_version(
    tmp_path, monkeypatch
) -> None:
    tag, site = _toy(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    reg = build_registry(entry_points_in(site))
    inv, mean = reg.get(f"invert_{tag}"), reg.get(f"mean_{tag}")
    assert (inv.dist, inv.version, inv.kind) == ("toy-plugin", "0.1.0", "image")
    assert (mean.kind, mean.origin) == ("analysis", "toy-plugin 0.1.0")
    assert "helper" not in reg and "gray" in reg and reg.get("gray").dist is None
    img = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    out, data = parse_spec(f"invert_{tag}|mean_{tag}:digits=2", reg).run(img)
    assert np.array_equal(out, 255 - img)
    assert data == {f"mean_{tag}": {"mean": round(float((255 - img).mean()), 2)}}


def test_the_canonical_form_and_hash_carry_the_plugins_version(tmp_path, monkeypatch) -> None:
    tag, old = _toy(tmp_path / "old", "0.1.0")
    monkeypatch.syspath_prepend(str(old))
    a = build_registry(entry_points_in(old))
    spec = f"gray|invert_{tag}:channels=first"
    first = parse_spec(spec, a)
    assert first.canonical == f"gray|invert_{tag}@toy-plugin==0.1.0:channels=first"
    assert parse_spec(first.canonical, a) == first  # the canonical form parses back
    assert first.versions() == {"toy-plugin": "0.1.0"}
    assert parse_spec("gray", a).versions() == {}

    # the same module, released as 0.2.0: same spec, another hash (another output folder)
    new = tmp_path / "new"
    write_plugin(new, "toy-plugin", "0.2.0", {}, {"toy": f"toy_{tag}"})
    second = parse_spec(spec, build_registry(entry_points_in(new)))
    assert second.canonical == f"gray|invert_{tag}@toy-plugin==0.2.0:channels=first"
    assert second.hash != first.hash and second.versions() == {"toy-plugin": "0.2.0"}

    with pytest.raises(
        SpecError, match=r"is from toy-plugin 0.1.0; the spec asks for toy-plugin==0.2"
    ):
        parse_spec(f"invert_{tag}@toy-plugin==0.2.0", a)
    assert parse_spec(f"invert_{tag}@Toy.Plugin", a).canonical.startswith(f"invert_{tag}@toy")
    with pytest.raises(SpecError, match="'gray' is built in"):
        parse_spec("gray@imgstream==0.1.0", a)


def test_an_operation_name_taken_twice_names_both(tmp_path, monkeypatch) -> None:
    site = tmp_path / "site"
    tag = uuid.uuid4().hex[:8]
    source = "import imgstream\n@imgstream.op('{name}')\ndef f(img):\n    return img\n"
    write_plugin(site, "dup-a", "1.0", {f"a_{tag}": source.format(name="blur")}, {"a": f"a_{tag}"})
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ConfigError) as info:
        build_registry(entry_points_in(site))
    assert str(info.value) == (
        "operation 'blur' is defined twice: by the built-ins and by dup-a 1.0"
    )
    assert info.value.exit_code == 2

    two = tmp_path / "two"
    name = f"same_{tag}"
    for dist in ("dup-b", "dup-c"):
        module = f"{dist.replace('-', '_')}_{tag}"
        write_plugin(two, dist, "2.0", {module: source.format(name=name)}, {"x": module})
    monkeypatch.syspath_prepend(str(two))
    with pytest.raises(ConfigError, match=f"'{name}' is defined twice: by dup-b 2.0 and by dup-c"):
        build_registry(entry_points_in(two))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "import no_such_module_anywhere\n",
            "cannot import module {m}: ModuleNotFoundError: No module named "
            "'no_such_module_anywhere'",
        ),
        (
            "raise RuntimeError('boom\\nsecond line')\n",
            "cannot import module {m}: RuntimeError: boom",
        ),
        ("def broken(:\n", "cannot import module {m}: SyntaxError: "),
        (
            "import imgstream\n@imgstream.op('nodefault')\ndef f(img, *, k: int): ...\n",
            "@imgstream.op('nodefault'): parameter 'k' needs a default",
        ),
    ],
)
def test_a_plugin_that_cannot_load_is_one_line_naming_it(
    tmp_path, monkeypatch, source, message
) -> None:
    module = f"broken_{uuid.uuid4().hex[:8]}"
    site = write_plugin(tmp_path, "broken-plugin", "1.2", {module: source}, {"bp": module})
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ConfigError) as info:
        build_registry(entry_points_in(site))
    text = str(info.value)
    assert text.startswith("plugin 'bp' (broken-plugin 1.2): ")
    assert message.format(m=module) in text and "\n" not in text
    assert info.value.exit_code == 2


def test_an_entry_point_may_name_one_function(tmp_path, monkeypatch) -> None:
    tag, site = _toy(tmp_path)
    (next(site.glob("*.dist-info")) / "entry_points.txt").write_text(
        f"[imgstream.ops]\none = toy_{tag}:mean\nnot_an_op = toy_{tag}:helper\n"
    )
    monkeypatch.syspath_prepend(str(site))
    eps = entry_points_in(site)
    reg = build_registry([ep for ep in eps if ep.name == "one"])
    assert f"mean_{tag}" in reg and f"invert_{tag}" not in reg
    with pytest.raises(ConfigError, match=r"is neither a module nor an @imgstream\.op function"):
        build_registry(eps)


# -- what an operation returns --------------------------------------------------------


def _pipeline(*fns: Any) -> Any:
    reg = Registry(tuple(operation(fn) for fn in dict.fromkeys(fns)))
    return parse_spec("|".join(mark_of(fn).name for fn in fns), reg)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("image", {"a": 1}, "returned dict; expected an image"),
        ("image", np.zeros((2, 2), np.float64), "returned a float64 image for an 8-bit one"),
        ("analysis", np.zeros((2, 2), np.uint8), "returned ndarray; an analysis operation returns"),
        ("analysis", {"a": {1, 2}}, "returned data that is not JSON: a set is not JSON"),
        ("analysis", {"a": [1.0, float("nan")]}, "not JSON: Out of range float values"),
        ("analysis", {(1, 2): "a"}, "not JSON: keys must be str"),
        ("image", (np.zeros((2, 2), np.uint8), 1, 2), "returned a tuple of 3"),
    ],
)
def test_a_wrong_return_fails_the_image_naming_the_step(kind, value, message) -> None:
    @imgstream.op("wrong", kind=kind)
    def wrong(img):
        return value

    with pytest.raises(ImageError) as info:
        _pipeline(wrong).run(np.zeros((2, 2), np.uint8))
    assert info.value.type == OP_ERROR
    assert info.value.message.startswith("wrong: ") and message in info.value.message


# -- batches -------------------------------------------------------------------------------


def _images(n: int) -> list[np.ndarray]:
    return [np.full((2, 3), 10 * i, np.uint8) for i in range(n)]


def _batch_ops(calls: list[int]) -> tuple[Any, ...]:
    @imgstream.op("fail_on_20")
    def fail_on_20(img):
        if img[0, 0] == 20:
            raise RuntimeError("twenty")
        return img

    @imgstream.op("count", kind="batch")
    def count(images, *, raise_: bool = False, extra: int = 0):
        calls.append(len(images))
        if raise_:
            raise RuntimeError("model crashed")
        return [{"size": len(images), "first": int(images[0][0, 0])} for _ in images] + [{}] * extra

    @imgstream.op("plus_one", kind="batch")
    def plus_one(images):
        calls.append(len(images))
        return [img + 1 for img in images]

    @imgstream.op("tag", kind="analysis")
    def tag(img):
        return {"value": int(img[0, 0])}

    return fail_on_20, count, plus_one, tag


def test_run_many_calls_a_batch_step_once_with_every_live_image() -> None:
    calls: list[int] = []
    fail_on_20, count, plus_one, tag = _batch_ops(calls)
    pipeline = _pipeline(fail_on_20, count, plus_one, tag)
    assert pipeline.has_batch_steps and not _pipeline(fail_on_20, tag).has_batch_steps
    got = pipeline.run_many(_images(5))
    assert calls == [4, 4]  # image 2 failed before the batch steps: it is not in their calls
    assert isinstance(got[2], ImageError) and got[2].type == OP_ERROR
    assert got[2].message == "fail_on_20: twenty"
    for i in (0, 1, 3, 4):
        img, outputs = got[i]  # type: ignore[misc]
        assert int(img[0, 0]) == 10 * i + 1  # replaced by the batch step's images
        assert outputs == {"count": {"size": 4, "first": 0}, "tag": {"value": 10 * i + 1}}


def test_run_many_spreads_per_image_stretches_with_the_mapper() -> None:
    from concurrent.futures import ThreadPoolExecutor

    calls: list[int] = []
    fail_on_20, _, plus_one, tag = _batch_ops(calls)
    pipeline = _pipeline(tag, plus_one, fail_on_20, tag)
    tasks: list[int] = []

    with ThreadPoolExecutor(2) as pool:

        def mapper(fn, items):
            items = list(items)
            tasks.append(len(items))
            return pool.map(fn, items)

        got = pipeline.run_many(_images(3), mapper=mapper)
    assert tasks == [3, 3] and calls == [3]  # one task per image per stretch, one batch call
    assert [isinstance(g, ImageError) for g in got] == [False, False, False]
    assert got[1][1] == {"tag": {"value": 10}, "tag#2": {"value": 11}}  # type: ignore[index]


@pytest.mark.parametrize(
    ("params", "message"),
    [("raise_=true", "model crashed"), ("extra=1", "returned 5 items for 4 images")],
)
def test_a_failed_batch_call_fails_every_image_of_it(params, message) -> None:
    calls: list[int] = []
    fail_on_20, count, _, tag = _batch_ops(calls)
    reg = Registry(tuple(operation(fn) for fn in (fail_on_20, count, tag)))
    got = parse_spec(f"fail_on_20|count:{params}|tag", reg).run_many(_images(5))
    assert calls == [4]
    assert all(isinstance(g, ImageError) and g.type == OP_ERROR for g in got)
    assert got[2].message == "fail_on_20: twenty"  # type: ignore[union-attr]
    assert got[0].message.startswith("count:") and message in got[0].message  # type: ignore[union-attr]


def test_run_runs_a_batch_step_as_a_batch_of_one() -> None:
    calls: list[int] = []
    _, count, plus_one, _ = _batch_ops(calls)
    img, outputs = _pipeline(count, plus_one).run(np.full((2, 2), 7, np.uint8))
    assert calls == [1, 1] and int(img[0, 0]) == 8
    assert outputs == {"count": {"size": 1, "first": 7}}
    assert _pipeline(count).run_many([]) == []


def test_a_core_batch_step_sees_each_tiles_core() -> None:
    seen: list[tuple[int, ...]] = []

    @imgstream.op("shapes", kind="batch", tiles="core", footprint=0)
    def shapes(images):
        seen.extend(img.shape for img in images)
        return [{"h": img.shape[0]} for img in images]

    views = [TileView(Box(1, 1, 2, 2), 0, 0), None]
    got = _pipeline(shapes).run_many([np.zeros((4, 4), np.uint8)] * 2, views)
    assert seen == [(2, 2), (4, 4)]
    assert got[0][0].shape == (4, 4)  # type: ignore[index]  # the tile itself passes on
