"""Person search (hf_reid.search, ``hf-reid search``): the index round trip, image queries on a
constructed gallery, ReText text queries against the model's own image-text similarity, the
refusal of models without a trained caption path, the command's outputs and its bad-input errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_models import TINY_IMAGE_SIZE, make_tiny_reid_model, save_tiny_reid_model, tiny_clip_config
from PIL import Image
from safetensors.torch import save_file

from hf_reid.cli import main
from hf_reid.models import ReTextConfig, ReTextModel
from hf_reid.search import SearchIndex, SearchModel, identity_from_path, read_image, save_grid
from hf_reid.tokenization import load_clip_tokenizer

TEXTS = ["a woman in a red coat", "a man with a blue backpack and black shorts", "a girl in white"]


def write_crop(path, seed: int, base=None, noise: float = 0.0):
    """A 64x128 random-texture crop (or ``base`` plus a little noise); returns its pixels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (128, 64, 3)).astype(np.float64) if base is None else base.copy()
    if noise:
        pixels = np.clip(pixels + rng.normal(0, noise, pixels.shape), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return pixels


def make_gallery(root, identities: int = 4):
    """Two images per identity (the second a noisy copy of the first) under Market-style names,
    and one more noisy copy of identity 2 as a query outside the gallery."""
    bases = {}
    for pid in range(1, identities + 1):
        bases[pid] = write_crop(root / "gallery" / f"{pid:04d}_c1s1_000001_00.jpg", seed=pid)
        write_crop(
            root / "gallery" / f"{pid:04d}_c2s1_000002_00.jpg", seed=100 + pid, base=bases[pid], noise=6
        )
    query = root / "query" / "0002_c3s1_000003_00.jpg"
    write_crop(query, seed=999, base=bases[2], noise=6)
    return root / "gallery", query


def make_retext(seed: int = 0, **config_kwargs) -> ReTextModel:
    torch.manual_seed(seed)
    config = ReTextConfig(
        clip_config=tiny_clip_config(),
        num_classes=4,
        image_size=TINY_IMAGE_SIZE,
        reconstruction_head={"num_layers": 1},
        **config_kwargs,
    )
    return ReTextModel(config).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return load_clip_tokenizer()


def test_index_save_load_round_trip_is_exact(tmp_path):
    generator = torch.Generator().manual_seed(0)
    embeddings = {
        "reid": torch.nn.functional.normalize(torch.randn(7, 24, generator=generator), dim=1),
        "joint": torch.nn.functional.normalize(torch.randn(7, 8, generator=generator), dim=1),
    }
    probes = {
        "reid": torch.randn(1, 24, generator=generator),
        "joint": torch.randn(1, 8, generator=generator),
    }
    paths = [f"g/{i:04d}_c1s1_000001_00.jpg" for i in range(7)]
    identities = ["0", "1", None, "3", "3", "x", "1"]
    index = SearchIndex(embeddings, paths, identities, model="tiny", probes=probes)
    tensors_file, json_file = index.save(tmp_path / "index.safetensors")
    assert (tensors_file.name, json_file.name) == ("index.safetensors", "index.json")
    info = json.loads(json_file.read_text())
    assert (
        info["paths"] == paths
        and info["identities"] == identities
        and info["dims"] == {"reid": 24, "joint": 8}
    )

    for name in ("index.safetensors", "index.json", "index"):
        loaded = SearchIndex.load(tmp_path / name)
        assert loaded.paths == paths and loaded.identities == identities and loaded.model == "tiny"
        for space in ("reid", "joint"):
            assert torch.equal(loaded.embeddings[space], embeddings[space])
            assert torch.equal(loaded.probes[space], probes[space])
    queries = embeddings["reid"][:3]
    for backend in ("torch", "faiss"):
        before = SearchIndex(embeddings, paths, identities, backend=backend).search(queries, "reid", 5)
        after = SearchIndex.load(tmp_path / "index", backend=backend).search(queries, "reid", 5)
        np.testing.assert_array_equal(before[1], after[1])
        np.testing.assert_allclose(before[0], after[0], atol=1e-6)  # BLAS may differ in the last bit
        assert (before[1][:, 0] == np.arange(3)).all()
        np.testing.assert_allclose(before[0][:, 0], 1.0, atol=1e-5)


def test_image_query_ranks_the_true_identity_first(tmp_path):
    gallery, query = make_gallery(tmp_path)
    model = SearchModel(make_tiny_reid_model(num_classes=4), name="tiny")
    index = SearchIndex.build(model, gallery, spaces=("reid",))
    assert len(index) == 8 and index.identities[:2] == ["1", "1"]
    (result,) = index.query_images(model, [query], top_k=4)
    assert result.query_identity == "2"
    assert result.identities[:2] == ["2", "2"] and result.matches[:2] == [True, True]
    assert result.matches[2:] == [False, False]
    assert result.scores == sorted(result.scores, reverse=True)
    # A query that is itself in the gallery is left out of its own hits (unless asked to keep it).
    own = str(gallery / "0003_c1s1_000001_00.jpg")
    (hits,) = index.query_images(model, [own], top_k=3)
    assert own not in hits.paths and hits.identities[0] == "3"
    (kept,) = index.query_images(model, [own], top_k=3, exclude_query=False)
    assert kept.paths[0] == own and kept.scores[0] == pytest.approx(1.0, abs=1e-5)
    # A features file of `hf-reid extract` (its documented layout) serves as the gallery too.
    names = [str(Path(p).relative_to(gallery)) for p in index.paths]
    with torch.no_grad():
        raw = model.model.get_image_embeddings(model.pixel_values([read_image(p) for p in index.paths]))
    metadata = {
        "format": "hf_reid.features",
        "version": 1,
        "model": "tiny",
        "images": str(gallery),
        "paths": names,
    }
    save_file(
        {"embeddings": raw},
        str(tmp_path / "features.safetensors"),
        metadata={"hf_reid": json.dumps(metadata)},
    )
    features = SearchIndex.load(tmp_path / "features.safetensors")
    assert features.paths == index.paths and features.identities == index.identities
    (same,) = features.query_images(model, [query], top_k=4)
    assert same.paths == result.paths and np.allclose(same.scores, result.scores, atol=1e-5)
    other = SearchModel(make_tiny_reid_model(num_classes=4, seed=1))
    with pytest.raises(ValueError, match="built by another model"):
        features.query_images(other, [query])
    # Identities from folders when the names do not give them.
    assert identity_from_path(tmp_path / "people" / "alice" / "a.png", tmp_path / "people") == "alice"
    assert identity_from_path(tmp_path / "-1_c1s1_000001_00.jpg") is None


def test_text_query_on_retext_scores_as_the_model_itself(tmp_path, tokenizer):
    gallery, _ = make_gallery(tmp_path, identities=3)
    retext = make_retext()
    model = SearchModel(retext, tokenizer=tokenizer, name="retext")
    assert model.has_trained_caption_path
    index = SearchIndex.build(model, gallery, spaces=("reid", "joint"))
    results = index.query_texts(model, TEXTS, top_k=6)

    # The model's own similarity: its forward's image-text logits times the temperature.
    images = [Image.open(p).convert("RGB") for p in index.paths]
    pixels = model.pixel_values(images)
    tokens = tokenizer(TEXTS * 2, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = retext(
            caption_pixel_values=pixels,
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            return_loss=False,
        )
    own = (out.image_text_logits * retext.config.matching_temperature).T[: len(TEXTS)]  # (texts, images)
    for row, result in enumerate(results):
        order = [index.paths.index(p) for p in result.paths]
        np.testing.assert_allclose(result.scores, own[row, order].numpy(), atol=1e-5)
        np.testing.assert_allclose(result.scores, np.sort(own[row].numpy())[::-1][:6], atol=1e-5)
    # The model-level API gives the same joint space.
    direct = (
        retext.get_text_embeddings(TEXTS, tokenizer=tokenizer) @ retext.get_joint_image_embeddings(pixels).T
    )
    torch.testing.assert_close(direct, own, atol=1e-5, rtol=0)


def test_models_without_a_caption_path_refuse_text(tmp_path, tokenizer, capsys):
    clip_reid = make_tiny_reid_model(num_classes=4)
    assert not clip_reid.has_trained_caption_path
    with pytest.raises(ValueError, match="CLIPReIDModel has no trained caption path"):
        clip_reid.get_text_embeddings(TEXTS, tokenizer=tokenizer)
    with pytest.warns(UserWarning, match="frozen CLIP text tower"):
        forced = clip_reid.get_text_embeddings(TEXTS, tokenizer=tokenizer, allow_untrained=True)
    torch.testing.assert_close(forced.norm(dim=1), torch.ones(len(TEXTS)))
    with pytest.raises(ValueError, match="no trained caption path"):
        SearchModel(clip_reid, tokenizer=tokenizer).embed_texts(TEXTS)
    no_alignment = make_retext(matching_loss_weight=0.0, structure_loss_weight=0.0)
    with pytest.raises(ValueError, match=r"without image.text alignment"):
        no_alignment.get_text_embeddings(TEXTS, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="tokenizer"):
        make_retext().get_text_embeddings(TEXTS)

    # The command refuses before embedding the gallery, with the reason.
    gallery, _ = make_gallery(tmp_path, identities=2)
    folder = save_tiny_reid_model(tmp_path / "clip_reid", model=clip_reid)
    code = main(
        ["search", str(folder), "--gallery", str(gallery), "--text", TEXTS[0], "--out", str(tmp_path / "o")]
    )
    assert code == 2 and "CLIPReIDModel has no trained caption path" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_search_writes_png_and_json(tmp_path, tokenizer, capsys):
    gallery, query = make_gallery(tmp_path)
    folder = save_tiny_reid_model(tmp_path / "model", num_classes=4)
    out = tmp_path / "out"
    argv = ["search", str(folder), "--gallery", str(gallery), "--query", str(query), "--top-k", "3"]
    assert main([*argv, "--out", str(out), "--save-index", str(tmp_path / "idx.safetensors")]) == 0
    summary = json.loads((out / "results.json").read_text())
    (result,) = summary["results"]
    assert summary["gallery_size"] == 8 and summary["query_kind"] == "image"
    assert len(result["paths"]) == 3 and result["matches"][:2] == [True, True]
    with Image.open(out / "results.png") as png:
        assert png.format == "PNG" and png.width > 3 * 64
    assert (tmp_path / "idx.safetensors").is_file() and (tmp_path / "idx.json").is_file()
    assert "results.png" in capsys.readouterr().out

    # The saved index answers the same query the same way, and refuses another model's queries.
    again = tmp_path / "again"
    saved = ["--gallery", str(tmp_path / "idx.json"), "--query", str(query)]
    assert main(["search", str(folder), *saved, "--top-k", "3", "--out", str(again)]) == 0
    assert json.loads((again / "results.json").read_text())["results"] == summary["results"]
    other = save_tiny_reid_model(tmp_path / "other", num_classes=4, seed=1)
    code = main(["search", str(other), *saved])
    assert code == 2 and "built by another model" in capsys.readouterr().err

    # A text query with ReText: a saved folder with its tokenizer.
    retext_folder = tmp_path / "retext"
    make_retext().save_pretrained(retext_folder)
    tokenizer.save_pretrained(retext_folder)
    text_out = tmp_path / "text"
    text_args = ["--gallery", str(gallery), "--text", *TEXTS[:2], "--top-k", "4", "--out", str(text_out)]
    assert main(["search", str(retext_folder), *text_args]) == 0
    summary = json.loads((text_out / "results.json").read_text())
    assert [r["query"] for r in summary["results"]] == TEXTS[:2] and summary["space"] == "joint"
    assert all(r["matches"] == [None] * 4 for r in summary["results"])
    assert (text_out / "results.png").is_file()


def test_bad_inputs_name_the_path(tmp_path, capsys):
    gallery, query = make_gallery(tmp_path, identities=2)
    folder = save_tiny_reid_model(tmp_path / "model", num_classes=4)

    def error(*args: str) -> str:
        assert main(["search", str(folder), *args, "--out", str(tmp_path / "o")]) == 2
        return capsys.readouterr().err

    missing = tmp_path / "nowhere"
    assert f"gallery {missing} does not exist" in error("--gallery", str(missing), "--query", str(query))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"gallery folder {empty} holds no images" in error("--gallery", str(empty), "--query", str(query))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    assert f"cannot read image {broken}" in error("--gallery", str(gallery), "--query", str(broken))
    absent = tmp_path / "absent.jpg"
    assert f"image {absent} does not exist" in error("--gallery", str(gallery), "--query", str(absent))
    not_index = tmp_path / "x.json"
    not_index.write_text("{}")
    (tmp_path / "x.safetensors").write_bytes(b"")
    assert "is not an hf_reid search index" in error("--gallery", str(not_index), "--query", str(query))
    assert main(["search", str(tmp_path / "no_model"), "--gallery", str(gallery), "--query", str(query)]) == 2
    assert str(tmp_path / "no_model") in capsys.readouterr().err
    with pytest.raises(ValueError, match="no results"):
        save_grid([], tmp_path / "x.png")
