"""The shipped SynthCLIP: a standard, small CLIP folder whose image–text alignment is real.

Zero-shot tests run on SynthPeds data generated here with another seed than the pretraining data
(so no image is shared) and compare with baselines computed in the same test.
"""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoTokenizer

from hf_reid.data import generate_synthpeds, load_reid_dataset
from hf_reid.metrics import evaluate_rank
from hf_reid.models import CLIPReIDModel
from hf_reid.synthclip import SYNTHCLIP_DIR, load_synthclip, synthclip_path
from hf_reid.zero_shot import encode_images, text_to_image_retrieval, zero_shot_reid

SIZE = dict(height=128, width=64)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthclip_data")
    generate_synthpeds(out, preset="tiny", seed=7, layouts=["market", "captions"], num_workers=1)
    return out


@pytest.fixture(scope="module")
def clip():
    return load_synthclip()


def test_shipped_folder_is_small_fp16_and_loads_as_float32(clip):
    files = {p.name for p in SYNTHCLIP_DIR.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "preprocessor_config.json",
        "README.md",
    } <= files
    total = sum(p.stat().st_size for p in SYNTHCLIP_DIR.iterdir())
    assert total < 20 * 2**20
    with safe_open(str(SYNTHCLIP_DIR / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}  # noqa: SIM118 (safe_open is not a mapping)
    assert all(p.dtype == torch.float32 for p in clip.parameters())
    tokenizer = AutoTokenizer.from_pretrained(synthclip_path())
    assert tokenizer("a person")["input_ids"][0] == clip.config.text_config.bos_token_id == 49406
    card = (SYNTHCLIP_DIR / "README.md").read_text()
    assert "pretrain_clip" in card and "seed" in card


def test_reid_path_resizes_the_square_table_once_to_the_same_features(clip, synth):
    """CLIPReIDModel's resize-once grid gives CLIP's own (per-call interpolated) projected feature."""
    reid = CLIPReIDModel.from_clip_pretrained(synthclip_path(), num_classes=4, image_size=(128, 64)).eval()
    query = load_reid_dataset("synthpeds", synth / "synthpeds_d0")["query"].select(range(8))
    expected = encode_images(clip, query, **SIZE)
    pixels = torch.stack(
        [
            torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
            for im in query["image"]
        ]
    )
    with torch.no_grad():
        got = torch.nn.functional.normalize(reid(pixel_values=pixels).image_features, dim=-1)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_text_to_image_retrieval_is_far_above_chance(clip, synth):
    captions = load_reid_dataset("captions", synth / "captions")["train"]
    tokenizer = AutoTokenizer.from_pretrained(synthclip_path())
    result = text_to_image_retrieval(clip, tokenizer, captions, **SIZE)
    assert result["R@1"] > 5 * result["chance@1"]
    assert result["R@10"] > result["R@1"]


@pytest.mark.parametrize("domain", ["synthpeds_d0", "synthpeds_d2"])  # d2: the tiny preset's held-out domain
def test_zero_shot_reid_beats_random_features(clip, synth, domain):
    splits = load_reid_dataset("synthpeds", synth / domain)
    result = zero_shot_reid(clip, splits["query"], splits["gallery"], **SIZE)
    q, g = splits["query"], splits["gallery"]
    rng = np.random.default_rng(0)
    random_map = np.mean(
        [
            evaluate_rank(
                rng.random((len(q), len(g))),
                np.asarray(q["pid"]),
                np.asarray(g["pid"]),
                np.asarray(q["camid"]),
                np.asarray(g["camid"]),
            ).mAP
            for _ in range(5)
        ]
    )
    assert result["mAP"] > 2 * random_map


def test_shipped_zero_shot_numbers_are_recorded():
    results = json.loads((SYNTHCLIP_DIR / "zeroshot_results.json").read_text())
    assert results["text_to_image"]["R@1"] > 5 * results["text_to_image"]["chance@1"]
    assert {"in_domain", "unseen_domain"} <= set(results)
    assert results["unseen_domain"]["domain"] == "synthpeds_d3"
