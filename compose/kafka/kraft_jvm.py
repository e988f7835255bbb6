"""The broker's jars and JVM: resolving them once with Maven, and the ``java`` command line.

Standard library only (imported by ``kraft.py``). The jars named by
``pom.xml`` are copied by Maven into ``$IMGSTREAM_KAFKA_HOME/libs`` (an
unpacked Kafka distribution works there as it is) or
``~/.cache/imgstream/kafka-VERSION/libs``, once, under a file lock, and
renamed into place only when complete. Next to them lives a class-data
sharing archive made by the first broker that exits cleanly, which saves
about a second of class loading on every later start.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J2 = HERE / "log4j2.properties"
ENV_HOME = "IMGSTREAM_KAFKA_HOME"
ENV_LOG_LEVEL = "IMGSTREAM_KAFKA_LOG_LEVEL"

#: JVM flags for a quick start and a small footprint: C1 only (start-up beats peak
#: throughput here), the serial collector (two cores, several JVMs), shared classes.
JVM_FLAGS = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


def kafka_version() -> str:
    """The Apache Kafka version ``pom.xml`` names."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    text = (node.text or "").strip() if node is not None else ""
    if not text:
        raise RuntimeError(f"{POM} names no kafka.version")
    return text


def libs_dir() -> Path:
    """Where the jars are (or will be): ``$IMGSTREAM_KAFKA_HOME/libs`` or the user cache."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser() / "libs"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "imgstream" / f"kafka-{kafka_version()}" / "libs"


def java_bin() -> str | None:
    """The ``java`` executable (``$JAVA_HOME/bin/java`` first), or None."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def _has_jars(libs: Path) -> bool:
    # a resolved cache carries a marker; a distribution under IMGSTREAM_KAFKA_HOME does not
    return any(libs.glob("kafka_2.13-*.jar")) and (
        (libs / ".complete").exists() or ENV_HOME in os.environ
    )


def available() -> tuple[bool, str]:
    """Whether a broker can be started here: (True, "") or (False, the reason)."""
    if java_bin() is None:
        return False, "no java on PATH (Apache Kafka needs Java 17+)"
    if not _has_jars(libs_dir()) and shutil.which("mvn") is None:
        return False, f"no mvn on PATH to resolve the Kafka jars (nor {ENV_HOME} set)"
    return True, ""


def ensure_jars(timeout_s: float = 900) -> Path:
    """The directory of the broker's jars, resolved with Maven on first use."""
    libs = libs_dir()
    if _has_jars(libs):
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be resolving the same jars
        if _has_jars(libs):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError(f"no mvn on PATH to resolve the Kafka jars (nor {ENV_HOME} set)")
        print(f"resolving Apache Kafka {kafka_version()} jars into {libs} (once)", file=sys.stderr)
        staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
        done = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-Dlibs.dir={staging}",
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd=libs.parent,
        )
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            tail = (done.stdout + done.stderr).strip()[-2000:]
            raise RuntimeError(f"mvn could not resolve the Kafka jars:\n{tail}")
        (staging / ".complete").write_text(kafka_version() + "\n")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
    return libs


def cds_archive(libs: Path) -> Path:
    """The class-data sharing archive for these jars and this ``java`` (may not exist yet).

    An archive the JVM does not accept (another build, other jars) is ignored
    with a warning in the node's log; nothing else changes.
    """
    java = Path(java_bin() or "java").resolve()
    stamp = int(java.stat().st_mtime) if java.exists() else 0
    return libs.parent / f"cds-{zlib.crc32(str(java).encode()):08x}-{stamp}.jsa"


def java_command(
    libs: Path, heap_mb: int, main: str, args: list[str], dump_to: Path | None = None
) -> list[str]:
    """``java`` with a small heap, the flags above and the shared archive, running ``main``.

    With ``dump_to``, the JVM writes a new archive there when it exits (the
    caller moves it into place with :func:`keep_archive`).
    """
    java = java_bin()
    if java is None:
        raise RuntimeError("no java on PATH (Apache Kafka needs Java 17+)")
    archive = cds_archive(libs)
    if dump_to is not None:
        cds = [f"-XX:ArchiveClassesAtExit={dump_to}"]
    elif archive.exists():
        cds = [f"-XX:SharedArchiveFile={archive}"]
    else:
        cds = []
    level = os.environ.get(ENV_LOG_LEVEL, "WARN")
    return [
        java,
        f"-Xmx{heap_mb}m",
        f"-Xms{min(heap_mb, 64)}m",
        *JVM_FLAGS,
        *cds,
        f"-Dlog4j2.configurationFile={LOG4J2}",
        f"-Dimgstream.kafka.log.level={level}",
        "-cp",
        f"{libs}/*",
        main,
        *args,
    ]


def keep_archive(libs: Path, dumped: Path) -> None:
    """Move an archive a JVM wrote at exit into place, unless one is there already."""
    archive = cds_archive(libs)
    if dumped.exists() and dumped.stat().st_size and not archive.exists():
        tmp = archive.with_suffix(f".{os.getpid()}.tmp")
        shutil.move(str(dumped), tmp)
        os.replace(tmp, archive)
