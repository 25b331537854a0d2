"""Zero-shot evaluation of a CLIP model on Re-ID data: no Re-ID training at all.

Two questions a pretrained CLIP must answer before Re-ID methods can build on it:

* does its text side describe people? -> :func:`text_to_image_retrieval`: each caption ranks all
  images; a hit is an image of the caption's identity (the CUHK-PEDES convention), reported as
  R@1/5/10 with the chance level beside it;
* do its image features already separate identities? -> :func:`zero_shot_reid`: the projected
  image embedding, L2-normalised, evaluated with the Market-1501 protocol.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from datasets import Dataset, Image
from transformers import CLIPModel, CLIPTokenizer

from .data.transforms import ReidTestTransform, ReidTransformConfig
from .metrics import evaluate_rank


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@torch.no_grad()
def encode_images(
    model: CLIPModel,
    dataset: Dataset,
    *,
    height: int,
    width: int,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    batch_size: int = 256,
) -> torch.Tensor:
    """L2-normalised projected image embeddings of every row of ``dataset`` (in order)."""
    model.eval()
    transform = ReidTestTransform(
        ReidTransformConfig(height=height, width=width, mean=tuple(mean), std=tuple(std))
    )
    images = dataset.cast_column("image", Image())
    feats = []
    for rows in _batches(len(images), batch_size):
        pixel_values = transform(images[rows]["image"]).to(model.device)
        out = model.get_image_features(pixel_values=pixel_values, interpolate_pos_encoding=True)
        feats.append(torch.nn.functional.normalize(out.pooler_output.float(), dim=-1).cpu())
    return torch.cat(feats)


@torch.no_grad()
def encode_texts(
    model: CLIPModel, tokenizer: CLIPTokenizer, texts: Sequence[str], *, batch_size: int = 512
) -> torch.Tensor:
    """L2-normalised projected text embeddings (captions longer than the context are truncated)."""
    model.eval()
    feats = []
    for rows in _batches(len(texts), batch_size):
        tokens = tokenizer(list(texts[rows]), padding=True, truncation=True, return_tensors="pt").to(
            model.device
        )
        out = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        feats.append(torch.nn.functional.normalize(out.pooler_output.float(), dim=-1).cpu())
    return torch.cat(feats)


def text_to_image_retrieval(
    model: CLIPModel,
    tokenizer: CLIPTokenizer,
    dataset: Dataset,
    *,
    height: int,
    width: int,
    ks: Sequence[int] = (1, 5, 10),
    **image_kwargs,
) -> dict[str, float]:
    """Text -> image recall@k over a captioned split (every caption is one query).

    Returns ``{"R@1": ..., "R@5": ..., "R@10": ..., "chance@1": ..., "num_queries": ...}``; chance@1
    is the expected R@1 of a random ranking (mean share of the gallery that is a correct match).
    """
    pids = np.asarray(dataset["pid"])
    captions = dataset["captions"]
    texts = [c for caps in captions for c in caps]
    text_pids = np.asarray([pid for pid, caps in zip(pids, captions) for _ in caps])
    if not texts:
        raise ValueError("text_to_image_retrieval: the dataset has no captions")
    image_feats = encode_images(model, dataset, height=height, width=width, **image_kwargs)
    text_feats = encode_texts(model, tokenizer, texts)
    order = torch.argsort(-(text_feats @ image_feats.T), dim=1, stable=True)[:, : max(ks)].numpy()
    hits = pids[order] == text_pids[:, None]
    result = {f"R@{k}": float(hits[:, :k].any(axis=1).mean()) for k in ks}
    share = np.array([(pids == p).mean() for p in text_pids])
    result["chance@1"] = float(share.mean())
    result["num_queries"] = len(texts)
    return result


def zero_shot_reid(
    model: CLIPModel, query: Dataset, gallery: Dataset, *, height: int, width: int, **image_kwargs
) -> dict[str, float]:
    """Market-protocol mAP / CMC of the raw CLIP image embedding (cosine distance)."""
    q = encode_images(model, query, height=height, width=width, **image_kwargs)
    g = encode_images(model, gallery, height=height, width=width, **image_kwargs)
    distmat = 1.0 - q @ g.T
    result = evaluate_rank(
        distmat.numpy(),
        np.asarray(query["pid"]),
        np.asarray(gallery["pid"]),
        np.asarray(query["camid"]),
        np.asarray(gallery["camid"]),
    )
    return result.to_dict()
