"""RunnerHooks: optional behaviour of the worker loop for bounded runs and observers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imgstream.schema.records import Message

if TYPE_CHECKING:
    from imgstream.worker.outcome import Outcome
    from imgstream.worker.runner import Runner


@dataclass(frozen=True)
class RunnerHooks:
    """Optional behaviour for bounded runs (replay) and observers.

    ``skip(msg)`` marks a message done without processing it (outside a
    replayed range); ``done(runner)`` ends the run once it returns True;
    ``observe(outcome)`` sees every outcome (called from the emitter thread).
    """

    skip: Callable[[Message], bool] | None = None
    done: Callable[[Runner], bool] | None = None
    observe: Callable[[Outcome], None] | None = None
