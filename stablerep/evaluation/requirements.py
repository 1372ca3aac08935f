"""What each protocol needs of a dataset's classes, checked before any encoder runs.

- The L-BFGS linear probe fits on train and chooses its L2 strength on validation: the dataset's
  own validation split, or else a stratified share of each class's train images, which leaves a
  class with a single train image out of validation altogether (and a set of such classes
  with no validation at all). So: 2 train images per class without a validation split (one to
  fit, one to validate), else 1 train and 1 validation image; and 1 test image per class.
- The SGD linear probe and kNN fit (or vote) on train and score on test: 1 of each per class.
- Few-shot episodes draw their shots and queries from test; a dataset without enough of them
  reports the protocol as not applicable, with the reason, and the others still run.
- Zero-shot scores the test split against class-name prompts: nothing per class beyond that.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stablerep.data.labelled import LabelledDataset
from stablerep.errors import DatasetError

SHOWN = 4  # classes named in the message before "and N more"


def protocol_needs(dataset: LabelledDataset, protocols: Any) -> list[tuple[str, dict[str, int], str]]:
    """(protocol, minimum images per class by split, why) for each enabled protocol that has one."""
    needs: list[tuple[str, dict[str, int], str]] = []
    if protocols.linear_probe.enabled:
        if dataset.val is None:
            needs.append(("the linear probe", {"train": 2, "test": 1},
                          " (it fits on part of each class's train images and chooses its L2 strength on the "
                          "rest: the dataset has no validation split)"))
        else:
            needs.append(("the linear probe", {"train": 1, "val": 1, "test": 1}, ""))
    if protocols.linear_probe_sgd.enabled:
        needs.append(("the SGD linear probe", {"train": 1, "test": 1}, ""))
    if protocols.knn.enabled:
        needs.append(("kNN", {"train": 1, "test": 1}, ""))
    return needs


def _describe_need(protocol: str, need: dict[str, int], why: str) -> str:
    counts = [f"{n} {split}" for split, n in need.items()]
    words = ", ".join(counts[:-1]) + f" and {counts[-1]}" if len(counts) > 1 else counts[0]
    return f"{protocol} needs at least {words} image{'s' if sum(need.values()) > 1 else ''} per class{why}"


def class_count_problem(name: str, dataset: LabelledDataset, protocols: Any) -> str | None:
    """One line naming the dataset, the classes short of images (with their counts) and what the
    protocols that cannot run need; None when every enabled protocol has what it needs."""
    splits = dataset.splits()
    counts = {split: np.bincount(np.asarray(s.labels, dtype=np.int64), minlength=len(dataset.classes))
              for split, s in splits.items()}
    short: dict[tuple[int, str], int] = {}  # (class, split) -> images there
    failing: list[str] = []
    for protocol, need, why in protocol_needs(dataset, protocols):
        hits = {(c, split): int(counts[split][c]) for split, n in need.items()
                for c in range(len(dataset.classes)) if counts[split][c] < n}
        if hits:
            short.update(hits)
            failing.append(_describe_need(protocol, need, why))
    if not short:
        return None
    items = sorted(short.items())
    shown = [f"class {dataset.classes[c]!r} has {n} {split} image(s)" for (c, split), n in items[:SHOWN]]
    more = f" (and {len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return f"{name}={dataset.spec}: {', '.join(shown)}{more}; {'; '.join(failing)}"


def check_class_counts(name: str, dataset: LabelledDataset, protocols: Any) -> None:
    """Raise DatasetError (one line, see :func:`class_count_problem`) if a protocol cannot run."""
    problem = class_count_problem(name, dataset, protocols)
    if problem:
        raise DatasetError(problem)
