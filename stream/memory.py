"""The process's peak memory, for the logs and the run summary."""

from __future__ import annotations


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    ``VmHWM`` where Linux has it: ``ru_maxrss`` survives ``exec``, so a worker
    started by a big parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
