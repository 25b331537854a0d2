"""Identity samplers: PK batches (P identities × K images) for metric-learning losses.

Triplet and contrastive Re-ID losses need several images of each identity in a batch, so training
does not shuffle images but draws *identities*: every batch holds P identities with K images
each (torchreid / CLIP-ReID ``RandomIdentitySampler``). The samplers here yield dataset indices
in that order, so a plain ``DataLoader(dataset, batch_size=sampler.batch_size, sampler=sampler)``
gives PK batches.

Epoch (torchreid's definition). Each identity with ``n`` images contributes ``max(1, n // K)``
*chunks* of K images (its images shuffled, the ``n % K`` left over sit out this epoch; an identity
with fewer than K images contributes one chunk that holds all its images plus ``K - n`` drawn
again with replacement). An epoch is ``S = total_chunks // (P * W)`` steps (``ceil`` with
``drop_last=False``; ``W`` = number of replicas), i.e. ``sum(max(1, n // K)) * K`` images:
``len(dataset)`` less up to K-1 per identity. ``__len__`` is exact and known before iterating.
Chunks that do not fill a step are left out (different ones every epoch); with
``drop_last=False`` the last step is filled with extra chunks of random identities instead.
Within a step all ``P * W`` identities are distinct; which identities meet in a step is random,
drawn in proportion to the chunks each identity has left (a shuffle of all chunks, constrained
to distinct identities per step). Planning an epoch costs O(identities x steps) in numpy:
0.02 s for Market-1501 size, about 1 s for 30k identities and 400k images.

Distributed training. With ``num_replicas=W`` every step holds ``P * W`` distinct identities and
replica ``r`` owns identities ``r*P .. (r+1)*P - 1`` of each step, so the ranks of one
optimisation step never share an identity (a triplet loss computed per rank sees full
identities). The stream depends only on ``(seed, epoch)``, so all ranks agree without
communication.

- ``rank=None`` (the Accelerate way): the sampler yields the whole stream, step by step and, inside
  a step, replica by replica. ``accelerator.prepare(dataloader)`` shards a ``DataLoader`` by
  handing batch ``i`` to process ``i % W`` (``split_batches=False``, the default), so with
  ``batch_size=P*K`` every process gets exactly its share, and ``DataLoaderShard`` calls
  :meth:`set_epoch` itself at the start of every pass. With ``split_batches=True`` use
  ``batch_size=P*K*W`` instead: each global batch is then sliced into the same per-rank parts.
- ``rank=r`` (plain DDP, no Accelerate sharding): the sampler yields only rank ``r``'s indices;
  do **not** pass that ``DataLoader`` through ``accelerator.prepare`` (it would shard again), and
  call :meth:`set_epoch` before every epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)

__all__ = ["MixedPKSampler", "PKSampler"]


def _as_label_array(labels: Any, name: str) -> np.ndarray:
    """Turn a list / numpy array / tensor / ``datasets`` column into a 1-D numpy array."""
    if hasattr(labels, "detach"):  # torch tensor
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be one label per dataset row (1-D), got shape {array.shape}.")
    if len(array) == 0:
        raise ValueError(f"`{name}` is empty: a PK sampler needs at least one labelled row.")
    return array


def _group_by_label(labels: np.ndarray, offset: int = 0) -> list[np.ndarray]:
    """Row indices (plus ``offset``) of every distinct label, in sorted label order."""
    _, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    sizes = np.bincount(inverse)
    return [part + offset for part in np.split(order, np.cumsum(sizes)[:-1])]


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def _resolve_replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int | None]:
    world = 1 if num_replicas is None else _check_positive_int(num_replicas, "num_replicas")
    if rank is not None and (isinstance(rank, bool) or not 0 <= rank < world):
        raise ValueError(f"`rank` must be in [0, num_replicas={world}), got {rank!r}.")
    return world, rank


class _PKSchedule:
    """Plans epochs for one source: which identities meet in each step and which images they bring.

    ``groups[i]`` are the dataset indices of identity ``i``; every step holds ``ids_per_step``
    distinct identities with ``k`` images each.
    """

    def __init__(self, groups: list[np.ndarray], ids_per_step: int, k: int, drop_last: bool, name: str):
        if len(groups) < ids_per_step:
            raise ValueError(
                f"{name} has {len(groups)} identities but a step needs {ids_per_step} distinct ones "
                "(P identities per batch × num_replicas). Lower `p` or use more data."
            )
        self.groups = groups
        self.ids_per_step = ids_per_step
        self.k = k
        self.sizes = np.array([len(g) for g in groups], dtype=np.int64)
        self.chunks = np.maximum(1, self.sizes // k)
        total = int(self.chunks.sum())
        self.num_steps = total // ids_per_step if drop_last else -(-total // ids_per_step)

    def _uses(self, rng: np.random.Generator) -> np.ndarray:
        """How many chunks each identity brings this epoch: at most one per step, exactly S*m in all."""
        steps, m = self.num_steps, self.ids_per_step
        uses = np.minimum(self.chunks, steps)
        # Too many chunks (drop_last): take one chunk away from random identities that have several.
        excess = int(uses.sum()) - steps * m
        while excess > 0:
            candidates = np.flatnonzero(uses > 1)
            if len(candidates) == 0:
                candidates = np.flatnonzero(uses > 0)
            picked = rng.permutation(candidates)[:excess]
            uses[picked] -= 1
            excess -= len(picked)
        # Too few (last step of drop_last=False, or capped identities): random identities bring one more.
        deficit = steps * m - int(uses.sum())
        while deficit > 0:
            picked = rng.permutation(np.flatnonzero(uses < steps))[:deficit]
            uses[picked] += 1
            deficit -= len(picked)
        return uses

    def _step_ids(self, uses: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(S, m) identity ids: distinct within a step; identity ``i`` appears ``uses[i]`` times.

        At every step, identities whose remaining uses equal the remaining steps must be drawn (or
        they could not all be placed); the others are drawn without replacement with probability
        proportional to their remaining uses (Efraimidis–Spirakis keys). Since remaining uses
        always sum to (remaining steps) × m and none exceeds the remaining steps, this never
        fails.
        """
        steps, m = self.num_steps, self.ids_per_step
        remaining = uses.astype(np.float64)
        plan = np.empty((steps, m), dtype=np.int64)
        for step in range(steps):
            left = steps - step
            forced = np.flatnonzero(remaining >= left)
            keys = np.log(rng.random(len(remaining))) / np.maximum(remaining, 1e-12)
            keys[remaining <= 0] = -np.inf
            keys[forced] = np.inf
            chosen = np.argpartition(-keys, m - 1)[:m]
            plan[step] = rng.permutation(chosen)
            remaining[chosen] -= 1
        return plan

    def _chunks_of(self, identity: int, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` chunks of ``k`` dataset indices of one identity, as a (count, k) array."""
        group, k = self.groups[identity], self.k
        n = len(group)
        if n < k:
            rows = [
                rng.permutation(np.concatenate([np.arange(n), rng.integers(0, n, k - n)]))
                for _ in range(count)
            ]
            return group[np.stack(rows)]
        base = n // k
        first = rng.permutation(n)[: min(count, base) * k].reshape(-1, k)
        if count > base:
            extra = np.stack([rng.choice(n, k, replace=False) for _ in range(count - base)])
            first = np.concatenate([first, extra])
        return group[first]

    def epoch(self, rng: np.random.Generator) -> np.ndarray:
        """One epoch as a (S, m, k) array of dataset indices."""
        uses = self._uses(rng)
        plan = self._step_ids(uses, rng)
        chunk_start = np.concatenate([[0], np.cumsum(uses)[:-1]])
        table = np.concatenate([self._chunks_of(i, int(c), rng) for i, c in enumerate(uses) if c > 0])
        # The j-th appearance of identity i (in step order) takes its j-th chunk.
        flat = plan.reshape(-1)
        order = np.argsort(flat, kind="stable")
        occurrence = np.empty_like(flat)
        occurrence[order] = np.arange(len(flat)) - chunk_start[flat[order]]
        return table[chunk_start[flat] + occurrence].reshape(self.num_steps, self.ids_per_step, self.k)


class _BasePKSampler(Sampler[int]):
    """Shared epoch bookkeeping of the PK samplers."""

    def __init__(self, seed: int, num_replicas: int | None, rank: int | None, drop_last: bool):
        super().__init__()
        self.seed = int(seed)
        self.num_replicas, self.rank = _resolve_replicas(num_replicas, rank)
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields (same on every rank)."""
        self.epoch = int(epoch)

    def _steps(self) -> np.ndarray:
        """This epoch as a (S, W, images_per_replica_step) array of dataset indices."""
        raise NotImplementedError

    @property
    def num_steps(self) -> int:
        """Optimisation steps per epoch (each with ``num_replicas`` batches)."""
        raise NotImplementedError

    @property
    def batch_size(self) -> int:
        """Images per batch of one replica: pass it as the ``DataLoader`` ``batch_size``."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        steps = self._steps()
        if self.rank is not None:
            steps = steps[:, self.rank]
        yield from steps.reshape(-1).tolist()

    def __len__(self) -> int:
        replicas = 1 if self.rank is not None else self.num_replicas
        return self.num_steps * replicas * self.batch_size


class PKSampler(_BasePKSampler):
    """Yields dataset indices in PK order: P identities × K images per batch.

    Args:
        labels: one identity label per dataset row (list, numpy array, tensor or a ``datasets``
            column such as ``dataset["label"]``); any sortable values.
        p: identities per batch (per replica).
        k: images per identity. Identities with fewer than K images are topped up by drawing
            their images again (with replacement).
        seed: base seed; the order of an epoch depends only on ``(seed, epoch)``.
        num_replicas: number of processes that train together (``accelerator.num_processes``);
            every step then holds ``P * num_replicas`` distinct identities.
        rank: ``None`` to yield the whole stream for ``accelerator.prepare`` to shard (see the
            module docstring), or this process's index to yield only its own batches.
        drop_last: leave out the chunks that do not fill a last step (default), or fill that
            step with extra chunks of random identities.

    Example (Accelerate, any number of processes)::

        sampler = PKSampler(train["label"], p=16, k=4, seed=42, num_replicas=accelerator.num_processes)
        loader = DataLoader(train, batch_size=sampler.batch_size, sampler=sampler, collate_fn=collator)
        loader = accelerator.prepare(loader)  # calls sampler.set_epoch every pass
    """

    def __init__(
        self,
        labels: Any,
        p: int,
        k: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = True,
    ):
        super().__init__(seed, num_replicas, rank, drop_last)
        self.p = _check_positive_int(p, "p")
        self.k = _check_positive_int(k, "k")
        self.set_labels(labels)

    def set_labels(self, labels: Any) -> None:
        """Sample from new labels from the next epoch on (a pseudo-label method re-clusters every
        epoch). Rows labelled below 0 (clustering outliers) are left out; the number of steps per
        epoch follows the number of identities."""
        array = _as_label_array(labels, "labels")
        kept = np.flatnonzero(array >= 0)
        groups = _group_by_label(array[kept])
        groups = [kept[g] for g in groups] if len(kept) < len(array) else groups
        self._schedule = _PKSchedule(
            groups, self.p * self.num_replicas, self.k, self.drop_last, "The dataset"
        )
        if self.num_steps == 0:
            raise ValueError(
                f"PKSampler: {len(groups)} identities give no full step of {self.p * self.num_replicas} "
                "identities; lower `p` or pass drop_last=False."
            )

    @property
    def num_identities(self) -> int:
        return len(self._schedule.groups)

    @property
    def num_steps(self) -> int:
        return self._schedule.num_steps

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def _steps(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        steps = self._schedule.epoch(rng)  # (S, P*W, K)
        return steps.reshape(self.num_steps, self.num_replicas, self.p * self.k)


class MixedPKSampler(_BasePKSampler):
    """PK batches that draw a fixed number of identities from each of several sources.

    Every batch (of every replica) holds ``shares[0]`` identities of source 0, then
    ``shares[1]`` of source 1, and so on, each with K images, e.g. ReText's mix of labelled
    multi-camera identities and captioned single-camera identities. Identities are per source:
    equal labels in different sources are different identities.

    Args:
        labels: either a list with one label array per source, where the dataset is the
            concatenation of the sources in that order (as :func:`~hf_reid.data.labels.concatenate_sources`
            builds it), or a single label array over the whole dataset together with
            ``source_index``.
        shares: identities per batch from each source, ``[P1, P2, ...]``.
        k: images per identity.
        source_index: source of every row, when ``labels`` is a single array (e.g.
            ``dataset["source"]``); ``shares[i]`` then belongs to the i-th smallest source value.
        epoch_source: the source whose PK epoch defines the epoch length; the other sources
            restart (with fresh randomness) whenever they run out within an epoch, and are cut
            when the epoch ends.
        seed, num_replicas, rank, drop_last: as in :class:`PKSampler`.
    """

    def __init__(
        self,
        labels: Any,
        shares: Sequence[int],
        k: int,
        source_index: Any = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = True,
        epoch_source: int = 0,
    ):
        super().__init__(seed, num_replicas, rank, drop_last)
        self.k = _check_positive_int(k, "k")
        self.shares = [_check_positive_int(s, f"shares[{i}]") for i, s in enumerate(shares)]
        groups_per_source = self._groups(labels, source_index)
        if len(groups_per_source) != len(self.shares):
            raise ValueError(
                f"MixedPKSampler: {len(groups_per_source)} sources but {len(self.shares)} shares; "
                "give one share (identities per batch) per source."
            )
        if not 0 <= epoch_source < len(self.shares):
            raise ValueError(
                f"`epoch_source` must index a source (0..{len(self.shares) - 1}), got {epoch_source}."
            )
        self.epoch_source = epoch_source
        self._schedules = [
            _PKSchedule(groups, share * self.num_replicas, self.k, drop_last, f"Source {i}")
            for i, (groups, share) in enumerate(zip(groups_per_source, self.shares))
        ]
        if self.num_steps == 0:
            raise ValueError(
                f"MixedPKSampler: source {epoch_source} gives no full step; lower its share or pass drop_last=False."
            )

    @staticmethod
    def _groups(labels: Any, source_index: Any) -> list[list[np.ndarray]]:
        if source_index is None:
            if isinstance(labels, np.ndarray) or not isinstance(labels, Sequence) or not labels:
                raise ValueError(
                    "MixedPKSampler: pass `labels` as a list of per-source label arrays, or one label "
                    "array together with `source_index`."
                )
            out, offset = [], 0
            for i, source_labels in enumerate(labels):
                array = _as_label_array(source_labels, f"labels[{i}]")
                out.append(_group_by_label(array, offset))
                offset += len(array)
            return out
        array = _as_label_array(labels, "labels")
        sources = _as_label_array(source_index, "source_index")
        if len(sources) != len(array):
            raise ValueError(f"`source_index` has {len(sources)} rows but `labels` has {len(array)}.")
        out = []
        for value in np.unique(sources):
            rows = np.flatnonzero(sources == value)
            out.append([rows[g] for g in _group_by_label(array[rows])])
        return out

    @property
    def num_steps(self) -> int:
        return self._schedules[self.epoch_source].num_steps

    @property
    def batch_size(self) -> int:
        return sum(self.shares) * self.k

    def _steps(self) -> np.ndarray:
        steps, world = self.num_steps, self.num_replicas
        parts = []
        for i, (schedule, share) in enumerate(zip(self._schedules, self.shares)):
            rng = np.random.default_rng([self.seed, self.epoch, i])
            blocks, have = [], 0
            while have < steps:
                blocks.append(schedule.epoch(rng))
                have += schedule.num_steps
            part = np.concatenate(blocks)[:steps]  # (S, share*W, K)
            parts.append(part.reshape(steps, world, share * self.k))
        return np.concatenate(parts, axis=2)
