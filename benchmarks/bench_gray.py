"""Benchmark: naive loop vs a Quix Streams app vs ``imgstream run --ops gray``, same 1080p JPEGs.

Run on purpose (``make bench``), not in the tests. The three are timed back to
back in each round on one generated set, so their ratios are meaningful on a
shared, noisy machine; with ``--repeat R`` the table shows each round and the
medians. Odd rounds run naive, Quix, imgstream; even rounds imgstream first.
Before each clock starts, the page cache's dirty pages are written back
(``sync``), so no side pays for the previous side's writes.

* (a) naive: ``cv2.imread`` -> ``cv2.cvtColor`` -> ``cv2.imwrite`` PNG, one image
  at a time in this process.
* (b) Quix Streams (``benchmarks/quix_gray.py``, ``pip install -e '.[bench]'``):
  the same three calls in an ``sdf.update``, two processes of one consumer
  group on the embedded broker. Its refs are produced before its clock starts
  and its broker start is not timed (both favour it): timed from launching the
  processes to the last output file.
* (c) ``imgstream run DIR --out OUT --ops gray``, end to end: broker start,
  topics, workers, producing the refs, every record collected.

After timing, every output is checked against
``cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2GRAY)`` and the rates count only
the images whose output exists and is equal: a run that drops or garbles
images does not look fast. For (c) the table also shows, from its result
records: time to first result, steady-state rate (after the first result),
the codec limit (cores / (decode + op + encode seconds per image), measured
in that run) and the fraction of it reached, the per-stage breakdown and the
start-up breakdown from the worker's log.

    python benchmarks/bench_gray.py [--n 1000] [--repeat 3] [--workers W] [--threads T]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "tests" / "data" / "photos"
QUIX_APP = Path(__file__).resolve().parent / "quix_gray.py"
STAGES = ("load", "decode", "ops", "encode", "store")


def make_set(directory: Path, n: int) -> None:
    """n distinct 1920x1080 JPEGs made from the sample photos (quality 90)."""
    directory.mkdir(parents=True)
    bases = [cv2.imread(str(p)) for p in sorted(PHOTOS.glob("*.jpg"))]
    rng = np.random.default_rng(0)
    for i in range(n):
        img = cv2.resize(bases[i % len(bases)], (1920, 1080), interpolation=cv2.INTER_CUBIC)
        noise = rng.integers(-6, 7, img.shape, dtype=np.int16)
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        cv2.imwrite(str(directory / f"frame{i:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])


def digest(img: np.ndarray) -> str:
    """A digest of an image's shape and pixels."""
    return hashlib.blake2b(repr(img.shape).encode() + img.tobytes(), digest_size=16).hexdigest()


def references(src: Path) -> dict[str, str]:
    """What every output must equal, per input name: OpenCV's BT.601 gray of the input."""
    return {
        p.name: digest(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2GRAY))
        for p in sorted(src.iterdir())
    }


def count_correct(pairs: list[tuple[str, Path]], refs: dict[str, str]) -> tuple[int, list[str]]:
    """How many (input name, output) pairs have an output equal to the reference; the problems."""
    ok, problems = 0, []
    for name, out in pairs:
        got = cv2.imread(str(out), cv2.IMREAD_UNCHANGED) if out.exists() else None
        if got is None:
            problems.append(f"{name}: no output")
        elif digest(got) != refs[name]:
            problems.append(f"{name}: pixels differ from the reference")
        else:
            ok += 1
    return ok, problems


# -- (a) the naive loop ---------------------------------------------------------


def naive(src: Path, out: Path) -> float:
    """imread -> cvtColor -> imwrite PNG, one image at a time; seconds."""
    out.mkdir()
    settle()
    started = time.perf_counter()
    for path in sorted(src.iterdir()):
        img = cv2.imread(str(path))
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        cv2.imwrite(str(out / (path.stem + ".png")), gray)
    return time.perf_counter() - started


def settle() -> None:
    """Write back what earlier runs left dirty in the page cache, before a clock starts.

    Each side writes ~1 GB of PNGs; the kernel writes them to disk in the
    background, with CPU and I/O that would otherwise land on whichever run
    comes next. Each run still pays for its own writes.
    """
    os.sync()


def by_stem(src: Path, out: Path) -> list[tuple[str, Path]]:
    """(input name, expected output path) for (a) and (b): one PNG per input, same stem."""
    return [(p.name, out / (p.stem + ".png")) for p in sorted(src.iterdir())]


# -- (b) Quix Streams -------------------------------------------------------------


def quix(src: Path, out: Path, processes: int, n: int, round_no: int) -> float:
    """Two (``processes``) Quix app processes over refs produced beforehand; seconds."""
    from imgstream.broker import EmbeddedBroker

    topic, group = f"quix-refs-{round_no}", f"quix-gray-{round_no}"
    py = [sys.executable, str(QUIX_APP)]
    with EmbeddedBroker() as broker:
        b = broker.bootstrap
        produce = ["produce", "--broker", b, "--topic", topic, "--partitions", str(processes)]
        subprocess.run(
            [*py, *produce, str(src)],
            check=True,
            capture_output=True,
        )
        out.mkdir()
        cmd = [*py, "consume", "--broker", b, "--topic", topic, "--group", group, "--out", str(out)]
        settle()
        started = time.perf_counter()
        procs = [
            subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for _ in range(processes)
        ]
        try:
            while sum(1 for _ in os.scandir(out)) < n:
                if any(p.poll() is not None for p in procs):
                    errors = b"".join(p.stderr.read() for p in procs if p.stderr)
                    raise SystemExit(f"a Quix process exited early:\n{errors.decode()[-3000:]}")
                time.sleep(0.02)
            elapsed = time.perf_counter() - started
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    return elapsed


# -- (c) imgstream ----------------------------------------------------------------


@dataclass
class StreamRun:
    """What one ``imgstream run`` measured."""

    seconds: float
    first_result_s: float = 0.0
    steady_rate: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)
    startup: dict[str, float] = field(default_factory=dict)

    def codec_limit(self, cores: int) -> float:
        """Images/s two cores could do if they did nothing but decode, op and encode."""
        per = sum(self.stage_ms.get(s, 0.0) for s in ("decode", "ops", "encode")) / 1000.0
        return cores / per if per else 0.0


def imgstream_pairs(out: Path) -> list[tuple[str, Path]]:
    """(input name, output) for (c), from its result records."""
    pairs = []
    for line in (out / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "result":
            pairs.append((Path(record["uri"]).name, Path(record["output_uri"])))
    return pairs


def stream_figures(out: Path, run: StreamRun, started_ms: float) -> None:
    """Time to first result, steady rate and stage means from the result records."""
    done, stages = [], {s: [] for s in STAGES}
    for line in (out / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] != "result":
            continue
        done.append(record["ts"] + record["latency_ms"])
        for s in STAGES:
            stages[s].append(record["timings"].get(s, 0.0))
    if not done:
        return
    done.sort()
    run.first_result_s = (done[0] - started_ms) / 1000.0
    if len(done) > 1 and done[-1] > done[0]:
        run.steady_rate = (len(done) - 1) / ((done[-1] - done[0]) / 1000.0)
    run.stage_ms = {s: 1000.0 * statistics.fmean(v) for s, v in stages.items() if v}


_STARTUP = re.compile(r"start-up:?\s+(.*?)(?: \(worker phases: logs/\))?$", re.MULTILINE)


def startup_figures(out: Path) -> dict[str, float]:
    """The start-up breakdown ``imgstream run`` and its workers log (seconds)."""
    figures: dict[str, float] = {}
    texts = [p.read_text(errors="replace") for p in sorted((out / "logs").glob("*.log"))]
    for text in texts:
        for m in _STARTUP.finditer(text):
            for part in m.group(1).split(","):
                name, _, value = part.strip().partition(" ")
                try:
                    figures.setdefault(name, float(value.rstrip("s")))
                except ValueError:
                    continue
    return figures


def imgstream(
    src: Path, out: Path, workers: int | None, threads: int | None, python: str = sys.executable
) -> StreamRun:
    """``imgstream run --ops gray`` end to end (broker start-up included).

    ``python``: the interpreter whose installed imgstream runs (``--baseline``).
    """
    cmd = [python, "-m", "imgstream.cli", "run", str(src), "--out", str(out)]
    cmd += ["--ops", "gray"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    settle()
    started_ms = time.time() * 1000.0
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    run = StreamRun(time.perf_counter() - started)
    if proc.returncode != 0:
        raise SystemExit(f"imgstream run failed:\n{proc.stdout}\n{proc.stderr}")
    stream_figures(out, run, started_ms)
    run.startup = startup_figures(out)
    for m in _STARTUP.finditer(proc.stdout):
        for part in m.group(1).split(","):
            name, _, value = part.strip().partition(" ")
            try:
                run.startup[name] = float(value.rstrip("s"))
            except ValueError:
                continue
    return run


# -- the table ----------------------------------------------------------------------


@dataclass
class Round:
    """One round: the three rates (correct images/s) and imgstream's figures."""

    naive: float
    quix: float
    stream: float
    run: StreamRun
    #: imgstream from ``--baseline`` (another install, e.g. the main branch), if given.
    baseline: float | None = None


def print_table(rounds: list[Round], n: int, cores: int) -> None:
    """The three-way table: each round, then the medians; and imgstream's breakdowns."""
    print(f"\n{n} x 1920x1080 JPEG -> gray PNG, {cores} cores, {len(rounds)} round(s)")
    head = "| round | naive img/s | Quix 2 proc img/s | imgstream img/s | vs naive | vs Quix |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")

    def row(label: str, a: float, b: float, c: float) -> None:
        print(
            f"| {label:5s} | {a:11.1f} | {b:17.1f} | {c:15.1f} | "
            f"{c / a if a else 0:7.2f}x | {c / b if b else 0:6.2f}x |"
        )

    for i, r in enumerate(rounds, 1):
        row(str(i), r.naive, r.quix, r.stream)
    med = statistics.median
    row(
        "median",
        med(r.naive for r in rounds),
        med(r.quix for r in rounds),
        med(r.stream for r in rounds),
    )
    base = [r.baseline for r in rounds if r.baseline is not None]
    if base:
        print(
            f"baseline imgstream (--baseline) median {med(base):.1f} images/s: this one is "
            f"{med(r.stream for r in rounds) / med(base):.2f}x it; per round "
            + ", ".join(f"{r.baseline:.1f}" for r in rounds if r.baseline is not None)
        )
    print(
        "ratios of the medians; per round: vs naive "
        + ", ".join(f"{r.stream / r.naive:.2f}" for r in rounds)
        + "; vs Quix "
        + ", ".join(f"{r.stream / r.quix:.2f}" for r in rounds if r.quix)
    )
    runs = [r.run for r in rounds]
    stage = {s: med(x.stage_ms.get(s, 0.0) for x in runs) for s in STAGES}
    limit = med(x.codec_limit(cores) for x in runs)
    steady = med(x.steady_rate for x in runs)
    print("\nimgstream, medians over the rounds:")
    print(
        "  per image (ms, one thread's time): "
        + ", ".join(f"{s} {v:.2f}" for s, v in stage.items())
    )
    print(
        f"  codec limit {limit:.1f} images/s ({cores} cores / (decode + ops + encode)); "
        f"steady state {steady:.1f} images/s = {steady / limit if limit else 0:.0%} of it"
    )
    print(f"  time to first result {med(x.first_result_s for x in runs):.2f} s (from the command)")
    names = sorted({k for x in runs for k in x.startup})
    if names:
        print(
            "  start-up: "
            + ", ".join(f"{k} {med(x.startup.get(k, 0.0) for x in runs):.2f} s" for k in names)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="imgstream run --workers")
    parser.add_argument("--threads", type=int, default=None, help="imgstream run --threads")
    parser.add_argument("--quix-processes", type=int, default=2)
    parser.add_argument("--skip-quix", action="store_true", help="no Quix Streams installed")
    parser.add_argument(
        "--baseline",
        default=None,
        help="Also time the imgstream of this Python (e.g. another checkout's .venv/bin/python) "
        "in each round: before/after figures from the same rounds.",
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="imgstream-bench-"))
    rounds: list[Round] = []
    failed = 0
    try:
        src = work / "in"
        make_set(src, args.n)
        refs = references(src)
        for i in range(1, args.repeat + 1):
            # The order flips every round: a machine that slows down (or speeds
            # up) over a round does not always favour the same side.
            if i % 2 == 0:
                run = imgstream(src, work / "stream", args.workers, args.threads)
            t_naive = naive(src, work / "naive")
            t_quix = (
                None if args.skip_quix else quix(src, work / "quix", args.quix_processes, args.n, i)
            )
            base = None
            if args.baseline:
                before = imgstream(src, work / "base", args.workers, args.threads, args.baseline)
                ok_base, bad_base = count_correct(imgstream_pairs(work / "base"), refs)
                failed += len(bad_base)
                base = ok_base / before.seconds
                shutil.rmtree(work / "base", ignore_errors=True)
            if i % 2 == 1:
                run = imgstream(src, work / "stream", args.workers, args.threads)
            checks = {
                "naive": count_correct(by_stem(src, work / "naive"), refs),
                "imgstream": count_correct(imgstream_pairs(work / "stream"), refs),
            }
            if t_quix is not None:
                checks["quix"] = count_correct(by_stem(src, work / "quix"), refs)
            for label, (_ok, problems) in checks.items():
                for problem in problems[:5]:
                    print(f"round {i} {label}: {problem}")
                failed += len(problems)
            ok = {label: c[0] for label, c in checks.items()}
            r = Round(
                ok["naive"] / t_naive,
                ok["quix"] / t_quix if t_quix else 0.0,
                ok["imgstream"] / run.seconds,
                run,
                base,
            )
            rounds.append(r)
            print(
                f"round {i}: naive {t_naive:.2f} s, Quix {t_quix or 0:.2f} s, "
                f"imgstream {run.seconds:.2f} s (first result {run.first_result_s:.2f} s, "
                f"steady {run.steady_rate:.1f}/s)"
                + (f", baseline {args.n / base:.2f} s" if base else "")
                + "; outputs checked",
                flush=True,
            )
            for d in ("naive", "quix", "stream"):
                shutil.rmtree(work / d, ignore_errors=True)
        print_table(rounds, args.n, cores)
        print("every output checked against cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2GRAY)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failed:
        raise SystemExit(f"{failed} outputs missing or wrong")


if __name__ == "__main__":
    main()
