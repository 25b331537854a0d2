"""Toy Re-ID pieces for the hf_reid.training tests, independent of the real models and data.

Synthetic identities whose signal lives in a few directions hidden under stronger nuisance
noise (so raw-feature retrieval is poor and a learned projection is good), a tiny embedding
model, a stand-in for the PK sampler (P identities x K images per batch, order a function of
seed and epoch), batch-hard triplet loss and a plain mAP. Used in-process by the tests and by
the scripts launched with ``accelerate launch``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def reset_accelerate_state() -> None:
    """Forget Accelerate's process-wide singletons so each test can create a fresh Accelerator."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def make_clustered_data(
    num_ids: int, per_id: int, *, dim: int = 32, signal_dims: int = 4, nuisance: float = 1.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(inputs (N, dim), pids (N,), camids (N,))`` with ``per_id`` samples per identity.

    All identities share one hidden mixing, so identities held out of training (split by pid)
    come from the same distribution.
    """
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_ids, signal_dims, generator=g)
    pids = torch.arange(num_ids).repeat_interleave(per_id)
    signal = centers[pids] + 0.15 * torch.randn(len(pids), signal_dims, generator=g)
    noise = nuisance * torch.randn(len(pids), dim - signal_dims, generator=g)
    mix = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]  # hide the signal directions
    inputs = torch.cat([signal, noise], dim=1) @ mix
    camids = torch.arange(len(pids)) % per_id
    return inputs, pids, camids


class ToyReidDataset(torch.utils.data.Dataset):
    """Dict samples like the real collator's: ``inputs``, ``pids``, ``camids``."""

    def __init__(self, inputs: torch.Tensor, pids: torch.Tensor, camids: torch.Tensor) -> None:
        self.inputs, self.pids, self.camids = inputs, pids, camids

    def __len__(self) -> int:
        return len(self.pids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"inputs": self.inputs[index], "pids": self.pids[index], "camids": self.camids[index]}


class ToyEmbedder(nn.Module):
    """A two-layer MLP embedding with dropout (so the tests exercise the RNG state)."""

    def __init__(self, dim: int = 32, hidden: int = 64, out: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out)
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)


class PKBatchSampler:
    """Stand-in for hf_reid.data.PKSampler: batches of P identities x K samples each.

    Each epoch shuffles the identities with a generator seeded by ``seed + epoch`` and cuts them
    into groups of P, so consecutive batches hold disjoint identities; Accelerate's batch
    sharding then gives each process different identities.
    """

    def __init__(self, pids: torch.Tensor, p: int, k: int, seed: int = 0) -> None:
        self.p, self.k, self.seed, self.epoch = p, k, seed, 0
        self.index_of: dict[int, torch.Tensor] = {}
        for pid in pids.unique().tolist():
            self.index_of[pid] = (pids == pid).nonzero().flatten()
        self.ids = sorted(self.index_of)
        self.batch_size = p * k
        self.drop_last = True

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids) // self.p

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 9973 + self.epoch)
        order = torch.randperm(len(self.ids), generator=g).tolist()
        for b in range(len(self)):
            batch = []
            for j in order[b * self.p : (b + 1) * self.p]:
                members = self.index_of[self.ids[j]]
                pick = torch.randperm(len(members), generator=g)[: self.k]
                batch.extend(members[pick].tolist())
            yield batch


def batch_hard_triplet(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Mean over anchors of ``max(0, m + hardest positive distance - hardest negative distance)``."""
    dist = torch.cdist(embeddings, embeddings)
    same = labels[:, None] == labels[None, :]
    hardest_pos = (dist * same).max(dim=1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(dim=1).values
    return F.relu(margin + hardest_pos - hardest_neg).mean()


def mean_average_precision(
    query: torch.Tensor, gallery: torch.Tensor, q_pids: torch.Tensor, g_pids: torch.Tensor
) -> float:
    """Plain mAP of Euclidean retrieval (every gallery item is a candidate)."""
    dist = torch.cdist(query, gallery)
    aps = []
    for i in range(len(query)):
        order = dist[i].argsort()
        hits = (g_pids[order] == q_pids[i]).float()
        if hits.sum() == 0:
            continue
        precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
        aps.append(float((precision * hits).sum() / hits.sum()))
    return sum(aps) / len(aps)
