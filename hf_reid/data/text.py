"""Captions -> text-encoder inputs, for image–text training (ReText's single-camera batches).

Each image of a captioned dataset has one or more captions (the ``captions`` column of
:data:`~hf_reid.data.features.REID_FEATURES`). :class:`CaptionCollator` decodes and transforms
the images like :class:`~hf_reid.data.collate.ReidCollator` and adds ``input_ids`` and
``attention_mask`` of ONE caption per image, chosen from ``(seed, epoch, image path)`` so that the
choice is reproducible (any number of workers, resume mid-epoch) and varies across epochs.

:func:`caption_statistics` reads the whole caption set once before training and reports what a
user should know about it: how many captions the text encoder's limit truncates, and how many
identities have a single image (their only positive pair in an identity-aware loss is the image
with its own caption).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .collate import ReidCollator

__all__ = ["CaptionCollator", "CaptionStatistics", "caption_statistics"]

logger = logging.getLogger(__name__)


def _choice(seed: int, epoch: int, key: str, count: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{epoch}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % count


class CaptionCollator:
    """``collate_fn`` for captioned images: ``pixel_values``, ``labels`` and the tokenised captions.

    Args:
        image_collator: decodes and transforms the images; it must return ``labels`` and
            ``captions`` (``ReidCollator(transform, columns=["labels", "captions"], seed=...)``).
        tokenizer: the text encoder's tokenizer (CLIP's, or BERT's for a BERT text encoder).
        max_length: longer captions are truncated to this many tokens (count them beforehand
            with :func:`caption_statistics`).
        seed: with the epoch and the image path, selects which caption of an image is used.
    """

    def __init__(self, image_collator: ReidCollator, tokenizer: Any, max_length: int, seed: int = 0):
        if max_length <= 0:
            raise ValueError(f"CaptionCollator: max_length must be positive, got {max_length}.")
        self.image_collator = image_collator
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (of the caption choice and of the image augmentation)."""
        self.epoch = int(epoch)
        self.image_collator.set_epoch(epoch)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch = self.image_collator(rows)
        if "captions" not in batch:
            raise KeyError(
                "CaptionCollator: the image collator returned no 'captions'; build it with "
                "columns=[..., 'captions']."
            )
        texts = []
        for position, (row, captions) in enumerate(zip(rows, batch.pop("captions"), strict=True)):
            if not captions:
                where = row.get("path") or f"row {position} of the batch"
                raise ValueError(
                    f"CaptionCollator: {where} has no caption; load the caption set with the 'captions' "
                    "layout (which drops or rejects images without captions) or filter such rows."
                )
            key = str(row.get("path") or position)
            texts.append(captions[_choice(self.seed, self.epoch, key, len(captions))])
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        batch["input_ids"] = tokens["input_ids"]
        batch["attention_mask"] = tokens["attention_mask"]
        return batch


@dataclass
class CaptionStatistics:
    """What :func:`caption_statistics` found in a caption set."""

    num_images: int
    num_identities: int
    num_captions: int
    truncated_captions: int
    """Captions longer than ``max_length`` tokens (the collator cuts them)."""
    max_tokens: int
    single_image_identities: int
    """Identities with one image: the PK sampler repeats it to fill K slots."""

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def caption_statistics(
    dataset: Any, tokenizer: Any, max_length: int, label_column: str = "pid"
) -> CaptionStatistics:
    """Count captions, those the tokenizer's ``max_length`` truncates and single-image identities,
    and log them (a warning for each problem found) so that nothing is cut silently."""
    captions = [text for row_captions in dataset["captions"] for text in row_captions]
    if not captions:
        raise ValueError("caption_statistics: the caption set has no captions.")
    lengths = [len(ids) for ids in tokenizer(captions, truncation=False)["input_ids"]]
    truncated = sum(length > max_length for length in lengths)
    images_per_identity = Counter(dataset[label_column])
    single = sum(count == 1 for count in images_per_identity.values())
    stats = CaptionStatistics(
        num_images=len(dataset),
        num_identities=len(images_per_identity),
        num_captions=len(captions),
        truncated_captions=truncated,
        max_tokens=max(lengths),
        single_image_identities=single,
    )
    logger.info(
        "Captions: %d images of %d identities, %d captions (longest %d tokens).",
        stats.num_images,
        stats.num_identities,
        stats.num_captions,
        stats.max_tokens,
    )
    if truncated:
        logger.warning(
            "Captions: %d of %d captions are longer than the text encoder's %d tokens and are truncated.",
            truncated,
            len(captions),
            max_length,
        )
    if single:
        logger.warning(
            "Captions: %d of %d identities have a single image; the PK sampler repeats it (their only "
            "image-text positive is the image with its own captions).",
            single,
            stats.num_identities,
        )
    return stats
