"""Evaluation protocols: how a dataset's query and gallery are ranked.

Every layout states its protocol (:meth:`hf_reid.data.layouts.ReidBuilder.evaluation_protocol`),
``load_reid_dataset`` attaches it to the splits it returns (``splits.protocol``), and recipe
evaluation (:func:`hf_reid.training.evaluate_domains`) applies it. A protocol is two things:

* the **ranking rule** handed to :func:`hf_reid.metrics.evaluate_rank`: which gallery entries are
  junk for a query (same identity and camera in the standard protocol; nothing when the data
  has no cameras; same identity and clothes under the clothes-changing protocol; same identity
  and camera *location* for SYSU-MM01's camera groups);
* the **trials**: protocols that are reported as a mean over random draws (SYSU-MM01's 10 gallery
  samplings, the 10 random splits of VIPeR, PRID, GRID and iLIDS) give ``num_trials`` and a
  ``select_trial`` function that picks, from the loaded query and gallery pools, the rows of one
  trial. Features are extracted once for the pools; every trial is a selection of rows.

The names below are what ``eval_results.json`` records (``protocol``), with the number of trials
and, for several trials, the mean and the spread (standard deviation) of every metric.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "NO_CAMERAS",
    "STANDARD",
    "EvalProtocol",
    "TrialRows",
    "TrialSelector",
]

TrialRows = Mapping[str, np.ndarray]
"""Metadata of one side (query or gallery) of an evaluation pool: ``pids``, ``camids``,
``clothes_ids``, ``paths`` (file names relative to the dataset folder), one entry per row."""

TrialSelector = Callable[[TrialRows, TrialRows, int], tuple[np.ndarray, np.ndarray]]
"""``select_trial(query, gallery, trial) -> (query row indices, gallery row indices)``."""


@dataclass(frozen=True)
class EvalProtocol:
    """How to rank a dataset's query against its gallery.

    Attributes:
        name: what results record, e.g. ``standard``, ``no_cameras``, ``clothes_changing``,
            ``all_search``, ``indoor_search``, ``low_resolution``, ``random_splits``.
        description: one sentence for logs and model cards.
        cross_camera: same-identity gallery entries of the query's camera (group) are junk.
            ``False`` for data without cameras: every same-identity entry is a match.
        clothes_changing: same-identity gallery entries in the query's clothes are junk too
            (needs the ``clothes_id`` column).
        camera_groups: camid -> location group; cameras of one group count as one camera.
        num_trials: how many random draws the reported numbers average over.
        select_trial: picks the rows of trial ``t`` from the query and gallery pools; ``None``
            when there is one trial that uses every row.
        pool_options: layout options under which ``load_reid_dataset`` returns the pools the
            trials draw from (SYSU-MM01: ``gallery_shot="all"``); recipe evaluation loads the
            evaluation data with them.
    """

    name: str
    description: str = ""
    cross_camera: bool = True
    clothes_changing: bool = False
    camera_groups: Mapping[int, int] | None = None
    num_trials: int = 1
    select_trial: TrialSelector | None = field(default=None, compare=False, repr=False)
    pool_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("EvalProtocol: name must be a non-empty string.")
        if self.num_trials < 1:
            raise ValueError(f"EvalProtocol {self.name!r}: num_trials must be >= 1, got {self.num_trials}.")
        if self.num_trials > 1 and self.select_trial is None:
            raise ValueError(
                f"EvalProtocol {self.name!r}: {self.num_trials} trials need a select_trial function."
            )

    def rank_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`hf_reid.metrics.evaluate_rank` for this protocol
        (clothes ids are added by the caller, who has them)."""
        kwargs: dict[str, Any] = {"cross_camera": self.cross_camera}
        if self.clothes_changing:
            kwargs["clothes_changing"] = True
        if self.camera_groups is not None:
            kwargs["camera_groups"] = dict(self.camera_groups)
        return kwargs

    def trial_indices(
        self, query: TrialRows, gallery: TrialRows, trial: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of trial ``trial`` (0-based) in the query and gallery pools."""
        if not 0 <= trial < self.num_trials:
            raise ValueError(f"{self.name}: trial {trial} is outside 0..{self.num_trials - 1}.")
        if self.select_trial is None:
            return np.arange(len(query["pids"])), np.arange(len(gallery["pids"]))
        q_idx, g_idx = self.select_trial(query, gallery, trial)
        return np.asarray(q_idx, dtype=np.int64), np.asarray(g_idx, dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        """What ``eval_results.json`` records about the protocol."""
        out: dict[str, Any] = {"name": self.name, "num_trials": self.num_trials, **self.rank_kwargs()}
        if self.description:
            out["description"] = self.description
        return out


STANDARD = EvalProtocol(
    "standard",
    "Market-1501 protocol: gallery images of the query's identity and camera are excluded.",
)
NO_CAMERAS = EvalProtocol(
    "no_cameras",
    "No camera labels: every gallery image of the query's identity is a true match.",
    cross_camera=False,
)
