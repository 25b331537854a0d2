"""SynthPeds: the CLI writes every layout; files, names and meta agree; the invariants the
benchmark promises (identities, cameras, clothes, modalities, captions, held-out domain) hold;
generation is deterministic."""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_reid.cli import main as cli_main
from hf_reid.data.synthetic import (
    ATTRIBUTE_NAMES,
    LAYOUT_NAMES,
    META_FILE,
    generate_synthpeds,
    load_market_attributes,
    make_identity,
    read_meta,
)
from hf_reid.data.synthetic.attributes import LOWER_COLORS, UPPER_COLORS
from hf_reid.data.synthetic.palette import luminance

MARKET_NAME = re.compile(
    r"^(?P<pid>-1|\d{4})_c(?P<cam>\d+)s(?P<seq>\d+)_(?P<frame>\d{6})_(?P<box>\d{2})\.jpg$"
)
LTCC_NAME = re.compile(r"^(?P<pid>\d{3})_(?P<clothes>\d+)_c(?P<cam>\d+)_(?P<frame>\d{6})\.png$")
SYSU_PATH = re.compile(r"^sysu_mm01/cam(?P<cam>[1-6])/(?P<pid>\d{4})/(?P<n>\d{4})\.jpg$")
MARKET_FOLDERS = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}
LTCC_FOLDERS = {"train": "train", "query": "query", "test": "gallery"}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, dict]:
    """The tiny preset, written once through the ``hf-reid synth`` command line."""
    out = tmp_path_factory.mktemp("synthpeds") / "tiny"
    status = cli_main(["synth", "--out", str(out), "--preset", "tiny", "--seed", "0", "--num-workers", "2"])
    assert status == 0
    return out, read_meta(out)


def _attrs(record: dict) -> dict[str, int]:
    return dict(zip(ATTRIBUTE_NAMES, record["attributes"]))


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_cli_writes_every_layout_of_the_tiny_preset(tiny_run):
    out, meta = tiny_run
    assert meta["layouts"] == list(LAYOUT_NAMES)
    expected = {*meta["domains"], "ltcc", "sysu_mm01", "mlr_cuhk03", "captions", "pretrain"}
    assert set(meta["counts"]) == expected
    assert {p.name for p in out.iterdir()} == expected | {META_FILE, "README.md", "synthpeds_manifest.json"}
    assert 1000 <= meta["num_images"] <= 2000
    assert meta["held_out_domain"] == meta["domains"][-1]
    card = (out / "README.md").read_text()
    assert meta["held_out_domain"] in card and "Market-1501" in card


def test_meta_matches_files_on_disk(tiny_run):
    out, meta = tiny_run
    on_disk = {
        p.relative_to(out).as_posix() for p in out.rglob("*") if p.suffix in (".jpg", ".png") and p.is_file()
    }
    in_meta = [r["path"] for r in meta["images"]]
    assert len(in_meta) == len(set(in_meta)) == meta["num_images"]
    assert set(in_meta) == on_disk
    counts = defaultdict(lambda: defaultdict(int))
    for record in meta["images"]:
        counts[record["dataset"]][record["split"]] += 1
    assert {d: dict(c) for d, c in counts.items()} == meta["counts"]
    # The caption JSON files carry exactly the meta's captions.
    for dataset in ("captions", "pretrain"):
        entries = json.loads((out / dataset / "reid_raw.json").read_text())
        by_path = {f"{dataset}/{e['file_path']}": e for e in entries}
        records = [r for r in meta["images"] if r["dataset"] == dataset]
        assert set(by_path) == {r["path"] for r in records}
        for record in records:
            assert by_path[record["path"]]["captions"] == record["captions"]
            assert by_path[record["path"]]["id"] == record["pid"]
            assert 1 <= len(record["captions"]) <= 2


def test_file_names_parse_and_agree_with_meta(tiny_run):
    _, meta = tiny_run
    for record in meta["images"]:
        path = record["path"]
        name = path.rsplit("/", 1)[-1]
        if record["layout"] in ("market", "mlr_cuhk03", "captions", "pretrain"):
            match = MARKET_NAME.match(name)
            assert match, path
            folder = path.split("/")[1]
            if record["layout"] in ("market", "mlr_cuhk03"):
                assert MARKET_FOLDERS[folder] == record["split"]
        elif record["layout"] == "ltcc":
            match = LTCC_NAME.match(name)
            assert match, path
            assert int(match["clothes"]) == record["clothes_id"] >= 1
            assert LTCC_FOLDERS[path.split("/")[1]] == record["split"]
        else:
            match = SYSU_PATH.match(path)
            assert match, path
        assert int(match["pid"]) == record["pid"]
        assert int(match["cam"]) - 1 == record["camid"]


def test_market_domains_follow_the_protocol(tiny_run):
    _, meta = tiny_run
    for domain in meta["domains"]:
        records = [r for r in meta["images"] if r["dataset"] == domain]
        by_split = defaultdict(list)
        for r in records:
            by_split[r["split"]].append(r)
        train_pids = {r["pid"] for r in by_split["train"]}
        test_pids = {r["pid"] for r in by_split["query"]}
        assert train_pids and test_pids and not train_pids & test_pids
        assert min(train_pids | test_pids) >= 1  # no distractors or junk outside the gallery
        gallery_pids = {r["pid"] for r in by_split["gallery"]}
        assert {0, -1} <= gallery_pids
        assert all(r["junk"] for r in by_split["gallery"] if r["pid"] == -1)
        # Every query has a gallery match from another camera.
        views = {(r["pid"], r["camid"]) for r in by_split["gallery"]}
        for q in by_split["query"]:
            assert any(pid == q["pid"] and cam != q["camid"] for pid, cam in views), q["path"]
        # One identity, one real attribute vector, in every image of it.
        vectors = defaultdict(set)
        for r in records:
            vectors[r["identity"]].add(tuple(r["attributes"]))
        assert all(len(v) == 1 for v in vectors.values())


def test_identities_are_disjoint_across_layouts_and_pretraining(tiny_run):
    _, meta = tiny_run
    owners = defaultdict(set)
    for record in meta["images"]:
        owners[record["identity"]].add(record["dataset"])
    assert all(len(datasets) == 1 for datasets in owners.values())
    pretrain = {uid for uid, ds in owners.items() if ds == {"pretrain"}}
    reid = {uid for uid, ds in owners.items() if ds != {"pretrain"}}
    assert pretrain and reid and not pretrain & reid


def test_held_out_domain_style_appears_only_in_its_own_folder(tiny_run):
    _, meta = tiny_run
    held_out = meta["domains"].index(meta["held_out_domain"])
    for record in meta["images"]:
        if record["dataset"] == meta["held_out_domain"]:
            assert record["style_domain"] == held_out
        else:
            assert record["style_domain"] != held_out, record["path"]
    # Each Market-style domain uses its own style for all its cameras.
    for k, domain in enumerate(meta["domains"]):
        assert {r["style_domain"] for r in meta["images"] if r["dataset"] == domain} == {k}


def test_captioned_identities_have_one_camera_and_pretraining_several(tiny_run):
    _, meta = tiny_run
    cams = defaultdict(set)
    for record in meta["images"]:
        if record["dataset"] in ("captions", "pretrain"):
            cams[(record["dataset"], record["pid"])].add(record["camid"])
    assert all(len(c) == 1 for (dataset, _), c in cams.items() if dataset == "captions")
    assert any(len(c) > 1 for (dataset, _), c in cams.items() if dataset == "pretrain")


def test_captions_name_the_attributes(tiny_run):
    _, meta = tiny_run
    female_words = ("woman", "girl", "lady")
    captioned = [r for r in meta["images"] if r["captions"]]
    assert len(captioned) == sum(1 for r in meta["images"] if r["dataset"] in ("captions", "pretrain"))
    for record in captioned:
        attrs = _attrs(record)
        uppers = [c for c in UPPER_COLORS if attrs[f"up{c}"] == 2]
        lowers = [c for c in LOWER_COLORS if attrs[f"down{c}"] == 2]
        for caption in record["captions"]:
            text = caption.lower()
            assert all(c in text for c in uppers), (caption, uppers)
            assert all(c in text for c in lowers), (caption, lowers)
            assert any(w in text for w in female_words) == (attrs["gender"] == 2), caption
            if attrs["backpack"] == 2:
                assert "backpack" in text
    # Phrasing varies: many distinct sentence openings.
    openings = {c.split()[0] + " " + c.split()[1] for r in captioned for c in r["captions"]}
    assert len(openings) >= 8


def test_infrared_cameras_render_grey_intensity(tiny_run):
    out, meta = tiny_run
    sysu = [r for r in meta["images"] if r["dataset"] == "sysu_mm01"]
    infrared = [r for r in sysu if r["modality"] == "infrared"]
    visible = [r for r in sysu if r["modality"] == "visible"]
    assert {r["camid"] + 1 for r in infrared} == {3, 6}
    assert {r["camid"] + 1 for r in visible} == {1, 2, 4, 5}
    for record in infrared:
        pixels = np.asarray(Image.open(out / record["path"]).convert("RGB")).astype(int)
        assert np.abs(pixels - pixels[..., :1]).max() <= 1, record["path"]
    colourful = [
        np.abs(np.diff(np.asarray(Image.open(out / r["path"]).convert("RGB")).astype(int), axis=2)).mean() > 2
        for r in visible
    ]
    assert np.mean(colourful) > 0.9
    # Every identity has an infrared and an indoor visible view.
    views = defaultdict(set)
    for r in sysu:
        views[r["pid"]].add(r["camid"] + 1)
    assert all(v & {3, 6} and v & {1, 2} for v in views.values())


def test_clothes_change_keeps_the_person_and_changes_the_outfit(tiny_run):
    out, meta = tiny_run
    ltcc = [r for r in meta["images"] if r["dataset"] == "ltcc"]
    outfits = defaultdict(dict)
    for r in ltcc:
        outfits[r["identity"]][r["clothes_id"]] = _attrs(r)
    changing = {uid: o for uid, o in outfits.items() if len(o) > 1}
    assert changing and any(len(o) == 1 for o in outfits.values())
    for uid, by_outfit in changing.items():
        ident = make_identity(0, uid, num_outfits=len(by_outfit))
        looks = {(o.upper.name, o.lower.name, o.lower_kind, o.long_sleeves) for o in ident.outfits}
        assert len(looks) == len(ident.outfits)
        for attrs in by_outfit.values():
            assert {k: attrs[k] for k in ("gender", "age", "hair", "backpack", "bag", "handbag", "hat")} == {
                k: ident.base_attributes[k]
                for k in ("gender", "age", "hair", "backpack", "bag", "handbag", "hat")
            }
    test_ids = {r["pid"] for r in ltcc if r["split"] != "train"}
    listed = (out / "ltcc/info/cloth-change_id_test.txt").read_text().split()
    assert {int(p) for p in listed} == {r["pid"] for r in ltcc if r["identity"] in changing} & test_ids


def test_low_resolution_queries(tiny_run):
    out, meta = tiny_run
    height, width = meta["image_size"]
    for record in meta["images"]:
        if record["dataset"] != "mlr_cuhk03":
            continue
        size = Image.open(out / record["path"]).size
        if record["camid"] == 0:
            assert record["lowres"] in (2, 3, 4)
            assert size == (round(width / record["lowres"]), round(height / record["lowres"]))
        else:
            assert size == (width, height)
        if record["split"] == "query":
            assert record["lowres"] > 1


def test_identities_draw_real_attribute_vectors_and_hidden_details():
    table = {tuple(codes[n] for n in ATTRIBUTE_NAMES) for _, codes in load_market_attributes()}
    identities = [make_identity(7, uid) for uid in range(400)]
    for ident in identities:
        assert tuple(ident.attributes()[n] for n in ATTRIBUTE_NAMES) in table
    groups = defaultdict(list)
    for ident in identities:
        groups[tuple(sorted(ident.attributes().items()))].append(ident)
    twins = [g for g in groups.values() if len(g) > 1]
    assert twins, "400 draws from 1,501 real vectors should repeat some attribute vectors"
    for group in twins:
        details = {
            (
                ident.outfits[0].upper.rgb,
                ident.outfits[0].shoes.rgb,
                ident.body.skin.rgb,
                ident.body.build,
            )
            for ident in group
        }
        assert len(details) == len(group)
    assert make_identity(7, 3) == make_identity(7, 3)


def test_infrared_reflectance_is_not_luminance():
    garments = [make_identity(11, uid).outfits[0].upper for uid in range(400)]
    ir = np.array([g.ir for g in garments])
    luma = np.array([luminance(g.rgb) for g in garments])
    correlation = np.corrcoef(ir, luma)[0, 1]
    assert 0.1 < correlation < 0.8  # related (bright dyes tend to reflect more) but re-ordered
    assert np.all((ir > 0) & (ir < 1))


def test_same_seed_gives_the_same_bytes_with_any_number_of_workers(tiny_run, tmp_path):
    out, meta = tiny_run
    again = generate_synthpeds(
        tmp_path / "again", "tiny", seed=0, layouts=["sysu_mm01", "captions"], num_workers=1
    )
    records = [r for r in meta["images"] if r["dataset"] in ("sysu_mm01", "captions")]
    assert again.num_images == len(records)
    for record in records:
        assert _digest(tmp_path / "again" / record["path"]) == _digest(out / record["path"]), record["path"]
    for text in ("sysu_mm01/exp/test_id.txt", "captions/reid_raw.json"):
        assert (tmp_path / "again" / text).read_bytes() == (out / text).read_bytes()


def test_another_seed_gives_other_data(tiny_run, tmp_path):
    out, meta = tiny_run
    other = generate_synthpeds(tmp_path / "seed1", "tiny", seed=1, layouts="ltcc", num_workers=1)
    assert other.num_images > 0
    ours = {_digest(out / r["path"]) for r in meta["images"] if r["dataset"] == "ltcc"}
    theirs = {_digest(p) for p in (tmp_path / "seed1" / "ltcc").rglob("*.png")}
    assert not ours & theirs
    assert read_meta(tmp_path / "seed1")["images"][0]["attributes"] != meta["images"][0]["attributes"] or (
        read_meta(tmp_path / "seed1")["images"][0]["identity"] != meta["images"][0]["identity"]
    )


def test_large_image_size_option(tmp_path):
    summary = generate_synthpeds(
        tmp_path / "big", "tiny", seed=0, image_size=(256, 128), layouts=["mlr_cuhk03"], num_workers=1
    )
    meta = read_meta(summary.out_dir)
    full = [r for r in meta["images"] if r["lowres"] == 1]
    assert full and all(Image.open(summary.out_dir / r["path"]).size == (128, 256) for r in full)
    low = [r for r in meta["images"] if r["lowres"] > 1]
    assert all(Image.open(summary.out_dir / r["path"]).size[1] == round(256 / r["lowres"]) for r in low)


def test_existing_output_is_reused_or_refused(tiny_run, tmp_path):
    out, meta = tiny_run
    reused = generate_synthpeds(out, "tiny", seed=0, num_workers=2)
    assert reused.reused and reused.num_images == meta["num_images"]
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_synthpeds(out, "tiny", seed=5, layouts="ltcc")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=str(foreign)):
        generate_synthpeds(foreign, "tiny", layouts="ltcc")
    generate_synthpeds(foreign, "tiny", layouts="captions", num_workers=1, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"  # overwrite only replaces SynthPeds' own entries
    assert (foreign / "captions" / "reid_raw.json").is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "huge"}, "unknown SynthPeds preset 'huge'"),
        ({"layouts": ["market", "msmt"]}, "unknown SynthPeds layout"),
        ({"image_size": (128, 128)}, "image_size must be one of"),
        ({"seed": -3}, "seed must be a non-negative integer"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_synthpeds(tmp_path / "x", **kwargs)


def test_cli_reports_bad_input_with_exit_status(tmp_path, capsys):
    assert cli_main(["synth", "--out", str(tmp_path / "x"), "--layouts", "nope", "--preset", "tiny"]) == 2
    assert "unknown SynthPeds layout" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["synth", "--out", str(tmp_path / "x"), "--image-size", "big"])
