"""The Huffman-only deflate coder (stream/_deflate.c) that PNG output uses for photos."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from isal import isal_zlib

from imgstream.io import png

try:
    from imgstream._deflate import huffman, png_idat
except ImportError:  # pragma: no cover - only where the package was built without a compiler
    if os.environ.get("CI"):
        raise
    pytest.skip(
        "imgstream._deflate was not built (no C compiler at install)", allow_module_level=True
    )

BLOCK = 64 * 1024


def inflate(raw: bytes) -> bytes:
    return zlib.decompress(raw, -15)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3 * BLOCK + 7))
def test_any_bytes_inflate_back(data: bytes) -> None:
    assert inflate(huffman(data, min_bits=0)) == data


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"x",
        bytes(BLOCK),  # one symbol: the code is padded to two
        bytes(range(256)) * (BLOCK // 256) * 3,  # exactly three blocks, flat histogram
        np.random.default_rng(1).integers(0, 256, 5 * BLOCK + 3, dtype=np.uint8).tobytes(),
    ],
    ids=["empty", "one-byte", "one-symbol", "three-blocks", "noise"],
)
def test_edge_cases_inflate_back(data: bytes) -> None:
    assert inflate(huffman(data, min_bits=0)) == data


def test_skewed_histograms_keep_codes_within_deflates_limit() -> None:
    """Fibonacci frequencies make an unlimited Huffman code ~25 bits deep."""
    fib = [1, 2]
    while len(fib) < 26:
        fib.append(fib[-1] + fib[-2])
    data = b"".join(bytes([i]) * f for i, f in enumerate(fib))[:BLOCK]
    rng = np.random.default_rng(2)
    shuffled = rng.permutation(np.frombuffer(data, np.uint8)).tobytes()
    for sample in (data, shuffled):
        assert inflate(huffman(sample, min_bits=0)) == sample


def test_compressible_content_is_handed_back_to_lz77() -> None:
    mask = np.zeros((480, 640), np.uint8)
    cv2.circle(mask, (320, 240), 100, 255, 3)
    rows = png.filtered_rows(mask)
    assert huffman(rows) is None
    noise = np.random.default_rng(3).integers(0, 256, (480, 640), np.uint8)
    assert huffman(png.filtered_rows(noise)) is not None


def test_photos_take_the_fast_path_at_about_isals_size(photos) -> None:
    fast = 0
    for path in photos:
        bgr = cv2.imread(str(path))
        for img in (cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), bgr, bgr[7:-5, 3:-9]):
            rows = png.filtered_rows(img)  # numpy's SUB filter
            stream = png.zlib_stream(img, 1)
            raw = huffman(rows)
            assert zlib.decompress(stream) == bytes(rows)  # header and Adler-32 included
            if raw is not None:  # the C filter agrees with numpy's
                assert stream[2:-4] == raw, path.name
                assert len(stream) < 1.12 * len(isal_zlib.compress(rows, 1)), path.name
                fast += 1
    assert fast >= 2 * len(photos)


def test_gray_stored_as_colour_goes_to_lz77(photos) -> None:
    gray = cv2.cvtColor(cv2.imread(str(photos[0])), cv2.COLOR_BGR2GRAY)
    as_colour = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    assert huffman(png.filtered_rows(gray)) is not None
    assert huffman(png.filtered_rows(as_colour)) is None


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 40),  # PNG has no empty images
    st.integers(1, 40),
    st.sampled_from([1, 3, 4]),
    st.integers(0, 2**32 - 1),
)
def test_png_idat_of_any_image_inflates_to_the_filtered_rows(h, w, c, seed) -> None:
    img = np.random.default_rng(seed).integers(0, 256, (h + 2, w + 3, c), np.uint8)
    view = img[1 : 1 + h, 2 : 2 + w]  # strided rows
    rows, bpp = png.rows_of(view if c > 1 else view[:, :, 0])
    stream = png_idat(rows, bpp, min_bits=0)
    assert stream is not None
    assert zlib.decompress(stream) == bytes(png.filtered_rows(view if c > 1 else view[:, :, 0]))


@pytest.mark.parametrize("channels", [1, 3])
def test_flipped_and_cropped_views_encode_to_their_pixels(photos, channels) -> None:
    bgr = cv2.imread(str(photos[0]))
    img = bgr if channels == 3 else cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    for view in (img[::-1], img[:, ::-1], img[::-2, 5:-7], img[10:-3:3, ::-1]):
        data = png.encode_png(view)
        back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(back, view)


def test_png_idat_refuses_what_is_not_rows() -> None:
    with pytest.raises(ValueError, match="2-D"):
        png_idat(np.zeros((4, 4, 3), np.uint8), 3)
    with pytest.raises(ValueError, match="2-D"):
        png_idat(np.zeros((4, 10), np.uint8), 3)  # 10 bytes is not whole pixels
    with pytest.raises(ValueError, match="2-D"):
        png_idat(np.zeros((4, 8), np.uint8)[:, ::2], 1)  # bytes within a row strided


def test_other_levels_use_lz77() -> None:
    img = np.random.default_rng(4).integers(0, 256, (64, 64), np.uint8)
    rows = png.filtered_rows(img)
    for level in (0, 2, 3):
        assert zlib.decompress(png.zlib_stream(img, level)) == bytes(rows)
        assert png.zlib_stream(img, level)[2:-4] != huffman(rows)


#: Another thread flips every block of a numpy buffer between two skewed histograms
#: (most bytes 0, or most bytes 255; each block keeps one of every byte value, so every
#: symbol has a code) while huffman() codes it. The coder sized its output from one
#: pass and wrote the other: a 1-bit code's byte became a 14-bit one, past the end.
RACE = textwrap.dedent(
    """
    import sys, threading, zlib
    import numpy as np
    if sys.argv[1:] == ["asan"]:
        from _deflate import huffman
    else:
        from imgstream._deflate import huffman
    BLOCK, blocks = 1 << 16, 128
    buf = np.zeros((blocks, BLOCK), np.uint8)
    buf[:, :256] = np.arange(256, dtype=np.uint8)
    stop = threading.Event()
    def flip():
        value = 255
        while not stop.is_set():
            buf[:, 256:] = value  # numpy copies with the GIL released
            value ^= 255
    thread = threading.Thread(target=flip)
    thread.start()
    try:
        for _ in range(5):
            out = np.frombuffer(zlib.decompress(huffman(buf, min_bits=0), -15), np.uint8)
            out = out.reshape(blocks, BLOCK)  # what was coded: some mix of the two states
            assert (out[:, :256] == np.arange(256)).all()
            assert np.isin(out[:, 256:], (0, 255)).all()
    finally:
        stop.set()
        thread.join()
    print("ok")
    """
)


def _python(script: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )


def test_huffman_copies_a_buffer_another_thread_changes() -> None:
    """In a child process: the old coder wrote past its output there (abort or segfault)."""
    proc = _python(RACE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


@pytest.fixture(scope="module")
def asan_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """stream/_deflate.c built with ASan and UBSan (any UB aborts), and the environment
    that loads it into this venv's (uninstrumented) Python: libasan preloaded."""
    gcc = shutil.which("gcc")
    libasan = (
        subprocess.run(
            [gcc, "-print-file-name=libasan.so"], capture_output=True, text=True
        ).stdout.strip()
        if gcc
        else ""
    )
    if not gcc or not os.path.isabs(libasan):
        if os.environ.get("CI"):
            raise RuntimeError("the ASan/UBSan test needs gcc with libasan")
        pytest.skip("gcc with libasan is needed to build the sanitized coder")
    out = tmp_path_factory.mktemp("asan")
    source = Path(__file__).parents[2] / "stream" / "_deflate.c"
    target = out / f"_deflate{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run(
        [
            gcc,
            "-shared",
            "-fPIC",
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            f"-I{sysconfig.get_paths()['include']}",
            str(source),
            "-o",
            str(target),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {
        **os.environ,
        "LD_PRELOAD": libasan,
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=99",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98",
        "PYTHONPATH": str(out),
    }
    return out, env


#: The coder's cases under the sanitizers: edge sizes, block boundaries, skewed and
#: random bytes, every buffer kind, and png_idat's strided, flipped and odd-sized rows.
SANITIZED = textwrap.dedent(
    """
    import zlib
    import numpy as np
    from _deflate import huffman, png_idat
    BLOCK = 1 << 16
    rng = np.random.default_rng(7)
    fib = [1, 2]
    while len(fib) < 26:
        fib.append(fib[-1] + fib[-2])
    cases = [b"", b"x", bytes(BLOCK), bytes(range(256)) * 768,
             b"".join(bytes([i]) * f for i, f in enumerate(fib))[:BLOCK]]
    for n in (1, 255, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 7):
        cases.append(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        cases.append(rng.integers(0, 4, n, dtype=np.uint8).tobytes())
    for data in cases:
        for kind in (bytes, bytearray, memoryview):
            assert zlib.decompress(huffman(kind(data), min_bits=0), -15) == data
        huffman(data)
    for h, w, c in [(1, 1, 1), (1, 40, 3), (7, 3, 4), (300, 301, 3), (2, 70000, 1)]:
        img = rng.integers(0, 256, (h + 2, (w + 3) * c), np.uint8)
        inner = slice(2 * c, (2 + w) * c)
        for rows in (img[1:1 + h, inner], img[::-1, inner], img[1:1 + h:2, : w * c]):
            stream = png_idat(rows, c, min_bits=0)
            assert len(zlib.decompress(stream)) == rows.shape[0] * (rows.shape[1] + 1)
            png_idat(rows, c)
    print("ok")
    """
)


def test_the_coder_runs_clean_under_asan_and_ubsan(
    asan_build: tuple[Path, dict[str, str]],
) -> None:
    out, env = asan_build
    proc = _python(SANITIZED, env=env, cwd=out)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert proc.stdout.strip() == "ok"
    assert "runtime error" not in proc.stderr and "AddressSanitizer" not in proc.stderr


def test_huffman_under_asan_copies_a_buffer_another_thread_changes(
    asan_build: tuple[Path, dict[str, str]],
) -> None:
    out, env = asan_build
    proc = _python(RACE, "asan", env=env, cwd=out)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert proc.stdout.strip() == "ok"
