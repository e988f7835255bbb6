"""Measured runs of the model operations' cores (``imgstream.models``): a script, not a test.

    .venv/bin/python benchmarks/bench_infer.py [--rounds 3] [--heldout DIR]

1. ``infer`` batching: a real CNN (PP-OCRv6's detector at 224x224, and its
   recogniser at 48x320, both from the rapidocr wheel, both with a dynamic
   batch axis) through :class:`~imgstream.models.onnx.Model`: micro-batches
   of 1, 4, 8 and 16 images in one ``session.run`` each, against one
   ``session.run`` per image; images/s, the batching speed-up, where the time
   goes (preprocess / run / postprocess) and the largest difference between
   the two runs' outputs.
2. ``ocr`` throughput (:class:`~imgstream.models.ocr.TextReader`, micro-batches
   of 8) on 640x480 scene photos and on 1080p frames, with the time per
   stage, next to rapidocr's own ``RapidOCR`` pipeline (defaults, one image a
   call) on the same 640x480 photos.
3. The hand-written post-processing (``textdet.db_boxes``, ``CtcDecoder``)
   against rapidocr's ``DBPostProcess`` and ``CTCLabelDecode`` on the same
   model outputs: same boxes and texts, and the time of each (STYLE habit 15).
4. Word recall on held-back real photos: the scene-text photos of OpenCV
   contrib's text samples that no test uses (Debian's ``opencv-doc``, see
   tests/data/CREDITS.md; ``apt-get install opencv-doc``), against words
   transcribed by hand (:data:`HELD_OUT`), for imgstream's reader and for
   rapidocr's pipeline.

Timings are medians over ``--rounds`` rounds in which the compared variants
alternate, so a neighbour's load hits both alike.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from imgstream.models import textdet, textrec
from imgstream.models.ocr import DET_MODEL, REC_MODEL, OcrSettings, TextReader, model_dir
from imgstream.models.onnx import InferSpec, Model
from imgstream.models.runtime import SessionCache

#: The angle classifier rapidocr also ships (a small real CNN classifier; ocr does not use it).
CLS_MODEL = "ch_ppocr_mobile_v2.0_cls_mobile.onnx"

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "tests" / "data" / "photos"
TEXT = ROOT / "tests" / "data" / "text"
OPENCV_TEXT = Path("/usr/share/doc/opencv-doc/examples/text")

#: The held-back photos and the words a person reads on them (small print left out;
#: a sign seen twice counts twice). Never used by a test.
HELD_OUT: dict[str, str] = {
    "scenetext02.jpg": "Sports Centre Wivenhoe Park Conference Centre Car Parks",
    "scenetext03.jpg": "the copy centre",
    "scenetext04.jpg": "GM 125",
    "scenetext05.jpg": "NO PARKING NO PARKING",
    "scenetext06.jpg": "priory galleries priory galleries at the ship",
    "scenetext_segmented_word01.jpg": "HOTEL",
    "scenetext_segmented_word02.jpg": "Stationery Box",
    "scenetext_segmented_word03.jpg": "Customer Freephone Private Hire Service",
    "scenetext_segmented_word04.jpg": "FOSTER'S",
    "scenetext_segmented_word05.jpg": "SANYO MULTIMEDIA PROJECTOR",
    "scenetext_word02.jpg": "HERE",
    "scenetext_word03.jpg": "riser",
    "scenetext_word04.jpg": "Produkt",
}

Image = np.ndarray[Any, Any]


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def photos(folder: Path | None) -> list[Image]:
    files = sorted(PHOTOS.glob("*.jpg")) + sorted(PHOTOS.glob("*.png")) + [TEXT / "scenetext01.jpg"]
    if folder is not None:
        files += [folder / name for name in HELD_OUT if name.startswith("scenetext0")]
        files += sorted(folder.glob("scenetext_segmented_word0?.jpg"))
    out = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is not None:
            out.append(img)
    return out


def fit(img: Image, width: int, height: int) -> Image:
    """Centre-crop to the aspect ratio, then resize: a frame of that size."""
    h, w = img.shape[:2]
    target = width / height
    if w / h > target:
        cw = int(h * target)
        img = img[:, (w - cw) // 2 : (w - cw) // 2 + cw]
    else:
        ch = int(w / target)
        img = img[(h - ch) // 2 : (h - ch) // 2 + ch]
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)


# -- 1. infer batching -------------------------------------------------------------------


def bench_infer(
    name: str, spec: InferSpec, images: list[Image], rounds: int, spinning: bool = False
) -> dict[int, float]:
    """Images/s for each micro-batch size (0: one run per image); prints the table."""
    model = Model(spec, cache=SessionCache(spinning=spinning))
    sizes = (1, 4, 8, 16)
    for b in sizes:  # warm up: ONNX Runtime plans its memory per input shape
        model.run(images[:b])
    stages: dict[int, list[tuple[float, float, float]]] = {0: [], **{b: [] for b in sizes}}
    cpu: dict[int, list[float]] = {0: [], **{b: [] for b in sizes}}

    def one_pass(batch_size: int) -> list[list[Image]]:
        """Every image once: micro-batches of ``batch_size`` (0: one run per image)."""
        pre = run = post = 0.0
        cpu0 = time.process_time()
        raw: list[list[Image]] = []
        groups = (
            [[img] for img in images]
            if batch_size == 0
            else [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        )
        for group in groups:
            t0 = time.perf_counter()
            x = model.prepare(group)
            t1 = time.perf_counter()
            arrays = model.forward(x)
            t2 = time.perf_counter()
            for a in arrays:
                model.pack_outputs(a)
            t3 = time.perf_counter()
            pre, run, post = pre + (t1 - t0), run + (t2 - t1), post + (t3 - t2)
            raw.extend(arrays)
        stages[batch_size].append((pre, run, post))
        cpu[batch_size].append(time.process_time() - cpu0)
        return raw

    diff = 0.0
    for _ in range(rounds):
        reference = one_pass(0)
        for b in sizes:
            got = one_pass(b)
            for ra, ga in zip(reference, got, strict=True):
                for r, g in zip(ra, ga, strict=True):
                    diff = max(diff, float(np.max(np.abs(r - g))))
    n = len(images)

    def med(b: int) -> tuple[float, float, float, float]:
        rows = stages[b]
        total = statistics.median(sum(r) for r in rows)
        return (
            total,
            statistics.median(r[0] for r in rows),
            statistics.median(r[1] for r in rows),
            statistics.median(r[2] for r in rows),
        )

    base = med(0)[0]
    print(
        f"\n{name}{' (spinning)' if spinning else ''}: {n} images, input "
        f"{model.input.channels}x{model.input.height}x{model.input.width}, "
        f"threads {model.loaded.threads}, {rounds} rounds (medians)"
    )
    print(
        f"  {'micro-batch':<22}{'images/s':>9}{'speed-up':>10}{'preprocess':>12}"
        f"{'run':>9}{'postprocess':>13}{'CPU ms/image':>14}"
    )
    for b in (0, *sizes):
        total, pre, run, post = med(b)
        label = "per image (1 run each)" if b == 0 else f"{b} in one run"
        print(
            f"  {label:<22}{n / total:>9.1f}{base / total:>9.2f}x"
            f"{pre / total:>11.0%}{run / total:>9.0%}{post / total:>12.0%}"
            f"{statistics.median(cpu[b]) / n * 1e3:>14.1f}"
        )
    print(f"  largest |batched - per image| over every output value: {diff:.2e}")
    return {b: n / med(b)[0] for b in (0, *sizes)}


# -- 2. ocr throughput -------------------------------------------------------------------


def bench_ocr(
    label: str,
    images: list[Image],
    rounds: int,
    rapid: Any | None,
    variants: dict[str, OcrSettings],
) -> None:
    """images/s of TextReader (micro-batches of 8) for each variant, alternating per round."""
    readers = {
        name: TextReader(settings, cache=SessionCache()) for name, settings in variants.items()
    }
    for reader in readers.values():
        reader.read_text(images[:1])
    took: dict[str, list[float]] = {name: [] for name in readers}
    cpu: dict[str, list[float]] = {name: [] for name in readers}
    stage_rows: dict[str, list[dict[str, float]]] = {name: [] for name in readers}
    runs: dict[str, int] = {}
    theirs: list[float] = []
    for _ in range(rounds):
        for name, reader in readers.items():
            reader.seconds = dict.fromkeys(reader.seconds, 0.0)
            before = dict(reader.calls)

            def batches(reader: TextReader = reader) -> None:
                for start in range(0, len(images), 8):
                    reader.read_text(images[start : start + 8])

            cpu0 = time.process_time()
            took[name].append(timed(batches))
            cpu[name].append(time.process_time() - cpu0)
            stage_rows[name].append(dict(reader.seconds))
            runs[name] = reader.calls["ocr.rec"] - before["ocr.rec"]
        if rapid is not None:
            theirs.append(timed(lambda: [rapid(img) for img in images]))
    n = len(images)
    print(f"\nocr on {n} {label}, micro-batches of 8, {rounds} rounds (medians)")
    print(
        f"  {'TextReader settings':<52}{'images/s':>9}{'CPU s/image':>12}{'rec runs':>9}"
        "   time per stage"
    )
    for name in readers:
        total = statistics.median(took[name])
        rows = stage_rows[name]
        split = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        stages = " ".join(f"{k} {v / total:.0%}" for k, v in split.items() if v / total >= 0.005)
        per = statistics.median(cpu[name]) / n
        print(f"  {name:<52}{n / total:>9.2f}{per:>12.3f}{runs[name]:>9}   {stages}")
    if theirs:
        t = statistics.median(theirs)
        first = statistics.median(took[next(iter(readers))])
        print(
            f"  {'rapidocr RapidOCR (defaults, one image a call)':<52}{n / t:>9.2f}"
            f"{'':>21}   {t / first:.2f}x the time of the first row"
        )


# -- 3. post-processing against rapidocr's -----------------------------------------------


def bench_postprocess(images: list[Image]) -> None:
    from rapidocr.ch_ppocr_det.utils import DBPostProcess
    from rapidocr.ch_ppocr_rec.utils import CTCLabelDecode

    reader = TextReader(OcrSettings(), cache=SessionCache())
    theirs_db = DBPostProcess(thresh=0.3, box_thresh=0.5, unclip_ratio=1.6, use_dilation=True)
    maps = []
    for img in images:
        size = textdet.det_size(*img.shape[:2], reader.settings.limit_side)
        x = np.empty((1, 3, *size), np.float32)
        textdet.det_input(img, size, x[0])
        maps.append((reader.det.session.run(None, {"x": x})[0], img.shape[:2]))
    t_ours = timed(lambda: [textdet.db_boxes(m[0, 0], *s) for m, s in maps])
    t_theirs = timed(lambda: [theirs_db(m, s) for m, s in maps])
    same = total = 0
    for m, s in maps:
        a = sorted(tuple(b.astype(int).ravel()) for b, _ in textdet.db_boxes(m[0, 0], *s))
        b = sorted(tuple(np.asarray(q).astype(int).ravel()) for q in theirs_db(m, s)[0])
        total += max(len(a), len(b))
        same += sum(1 for q in a if any(np.abs(np.subtract(q, r)).max() <= 1 for r in b))
    print(
        f"\nDB post-processing on {len(maps)} maps: imgstream {t_ours * 1e3:.1f} ms, "
        f"rapidocr DBPostProcess {t_theirs * 1e3:.1f} ms; boxes within 1 px: {same}/{total}"
    )
    crops = []
    for img, (m, s) in zip(images, maps, strict=True):
        crops += [textdet.crop_quad(img, q) for q, _ in textdet.db_boxes(m[0, 0], *s)]
    plans = textrec.plan_batches([textdet.aspect(c) for c in crops], 16, 160)
    outs = [
        reader.rec.session.run(
            None, {"x": textrec.rec_input([crops[i] for i in p.indices], p.width)}
        )[0]
        for p in plans
    ]
    meta = reader.rec.session.get_modelmeta().custom_metadata_map["character"].splitlines()
    theirs_ctc = CTCLabelDecode(character=meta)
    t_ours = timed(lambda: [reader.decoder.decode(o) for o in outs])
    t_theirs = timed(lambda: [theirs_ctc(o) for o in outs])
    agree = sum(
        a == b[0]
        for o in outs
        for a, b in zip([t for t, _ in reader.decoder.decode(o)], theirs_ctc(o)[0], strict=True)
    )
    print(
        f"CTC decoding of {len(crops)} crops: imgstream {t_ours * 1e3:.1f} ms, rapidocr "
        f"CTCLabelDecode {t_theirs * 1e3:.1f} ms; same text: {agree}/{len(crops)}"
    )


# -- 4. held-back word recall ------------------------------------------------------------


def words(text: str) -> list[str]:
    return [w for w in (re.sub(r"[^0-9a-z]", "", t.lower()) for t in text.split()) if w]


def recall(found: list[str], truth: list[str]) -> int:
    have = Counter(words(" ".join(found)))
    want = Counter(words(" ".join(truth)))
    return sum(min(n, have[w]) for w, n in want.items())


def bench_accuracy(folder: Path, rapid: Any | None) -> None:
    reader = TextReader(cache=SessionCache())
    names = list(HELD_OUT)
    images = [cv2.imread(str(folder / n)) for n in names]
    ours = reader.read_text(images)
    total = sum(len(HELD_OUT[n].split()) for n in names)
    hit_ours = hit_theirs = 0
    print(f"\nword recall on {len(names)} held-back photos ({total} words), from {folder}")
    for name, img, result in zip(names, images, ours, strict=True):
        got = [line["text"] for line in result["lines"]]
        h1 = recall(got, HELD_OUT[name].split())
        hit_ours += h1
        row = f"  {name:<32}{h1}/{len(HELD_OUT[name].split())} {got}"
        if rapid is not None:
            out = rapid(img)
            theirs = list(out.txts) if out.txts is not None else []
            h2 = recall(theirs, HELD_OUT[name].split())
            hit_theirs += h2
            row += f"   rapidocr {h2}/{len(HELD_OUT[name].split())}"
        print(row)
    crops = [n for n in names if n.startswith("scenetext_word")]
    whole = [cv2.imread(str(folder / n)) for n in crops]
    boxed = reader.read_in_boxes(whole, [[[0, 0, im.shape[1], im.shape[0]]] for im in whole])
    read = [b[0]["text"] for b in boxed]
    hits = sum(recall([t], HELD_OUT[n].split()) for t, n in zip(read, crops, strict=True))
    print(
        f"  read_in_boxes on the {len(crops)} word crops (the whole crop as the box): "
        f"{hits}/{len(crops)} {read}"
    )
    print(
        f"  imgstream: {hit_ours}/{total} = {hit_ours / total:.0%}"
        + (
            f"; rapidocr defaults: {hit_theirs}/{total} = {hit_theirs / total:.0%}"
            if rapid is not None
            else ""
        )
    )


def rapidocr_pipeline() -> Any | None:
    try:
        from rapidocr import RapidOCR
    except ImportError:
        return None
    return RapidOCR(params={"Global.log_level": "error"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--heldout", type=Path, default=OPENCV_TEXT)
    parser.add_argument("--skip", nargs="*", default=[], choices=["infer", "ocr", "post", "acc"])
    args = parser.parse_args()
    folder = args.heldout if (args.heldout / "scenetext02.jpg").is_file() else None
    if folder is None:
        print(
            f"no held-back photos in {args.heldout} (apt-get install opencv-doc): "
            "the accuracy section is skipped and the throughput sets are smaller"
        )
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start")
    scenes = photos(folder)
    models = model_dir()
    if "infer" not in args.skip:
        rng = np.random.default_rng(1)
        crops = []
        for _ in range(32):
            img = scenes[int(rng.integers(len(scenes)))]
            h, w = img.shape[:2]
            ch, cw = int(rng.integers(h // 4, h // 2)), int(rng.integers(w // 4, w - 1))
            y, x = int(rng.integers(0, h - ch)), int(rng.integers(0, w - cw))
            crops.append(img[y : y + ch, x : x + cw])
        cls = InferSpec(
            os.path.join(models, CLS_MODEL), w=192, h=48, scale=1 / 127.5, mean=(1.0,), rgb=False
        )
        bench_infer("PP-OCR mobile angle classifier (infer, w=192,h=48)", cls, crops, args.rounds)
        rec = InferSpec(
            os.path.join(models, REC_MODEL), w=320, h=48, scale=1 / 127.5, mean=(1.0,), rgb=False
        )
        bench_infer("PP-OCRv6 rec (infer, w=320,h=48)", rec, crops, args.rounds)
        det = InferSpec(
            os.path.join(models, DET_MODEL), size=224, scale=1 / 127.5, mean=(1.0,), rgb=False
        )
        bench_infer("PP-OCRv6 det (infer, size=224)", det, crops, args.rounds)
        bench_infer("PP-OCRv6 rec (infer, w=320,h=48)", rec, crops, args.rounds, spinning=True)
    rapid = rapidocr_pipeline()
    if "ocr" not in args.skip:
        vga = [fit(img, 640, 480) for img in scenes][:16]
        default = OcrSettings()
        variants = {
            "defaults (det_batch 1, rec_batch 6, min_width 160)": default,
            "det_batch 8 (same-size images in one det run)": replace(default, det_batch=8),
            "rec_batch 16": replace(default, rec_batch=16),
            "min_width 320 (PaddleOCR's)": replace(default, min_width=320),
            # the same settings as the first row: how far rows differ by the machine's load alone
            "defaults again (the noise between rows)": replace(default),
        }
        bench_ocr("640x480 scene photos", vga, args.rounds, rapid, variants)
        hd = [fit(img, 1920, 1080) for img in scenes][-8:]
        frames = {
            "defaults (limit_side 960)": default,
            "limit_side 1280": replace(default, limit_side=1280),
            "limit_side 640": replace(default, limit_side=640),
        }
        bench_ocr("1920x1080 frames", hd, max(1, args.rounds - 1), None, frames)
    if "post" not in args.skip:
        bench_postprocess([fit(img, 640, 480) for img in scenes])
    if folder is not None and "acc" not in args.skip:
        bench_accuracy(folder, rapid)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
