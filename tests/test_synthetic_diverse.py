"""SynthPeds' single-camera captioned set options (issue #15): ``captioned_styles`` (``sources``,
the default, byte-identical to before the option; ``diverse``, a camera per identity at a place of
its own, never the held-out domain's style) and ``captioned_identities``; how they are recorded,
reused and passed through the recipes; and the plan of ``benchmarks/generalization_leaderboard.py``."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image

from hf_reid.cli import main as cli_main
from hf_reid.commands import synth as synth_command
from hf_reid.data.synthetic import (
    CAPTIONED_STYLES,
    DOMAIN_STYLES,
    HELD_OUT_MARGIN,
    domain_cameras,
    domain_name,
    domain_style,
    generate_synthpeds,
    get_preset,
    place_bases,
    plan_synthpeds,
    read_meta,
    save_preview,
    style_distance,
)
from hf_reid.data.synthetic.cameras import STYLE_DIMENSIONS
from hf_reid.data.synthetic.manifest import read_manifest, regenerate_command
from hf_reid.training import ConfigError, load_config, prepare_synthpeds
from hf_reid.training.reid_data import DataArgs

ROOT = Path(__file__).resolve().parent.parent

# Computed with the code as it was before the captioned-set options existed (the commit issue #15
# was filed against): `generate_synthpeds(out, "tiny", seed=0, layouts="captions")`, sha256 over the
# sorted "<path> <sha256>" lines of every file under each top-level entry; and the planning
# function's draws (`_plan_digest` of `plan_synthpeds(0, preset, ["captions"])`). A change means
# existing SynthPeds results, and every run on them, are no longer reproducible.
CAPTIONS_TINY_SEED0_DIGESTS = {
    "README.md": "41d2f98350ac2e4fd5fae7a3f0be2eb6f1650252a6c8ab7f890845880695829c",
    "captions": "a277bb28fcdff1901358ba2101eeff37ed8d3fa74ebe3fb3e704bc38177269a2",
    "synthpeds_manifest.json": "dcda9c3fc8178e0276d8a7de226b76fa0c2864ddf9ce779c368700f62e057179",
    "synthpeds_meta.json": "df259a01f204c1ab230231291c4dd4926d4a9889750d3121ff0cbe11393e7698",
}
# The same run on an AVX2-only CPU (see TINY_SEED3_DIGESTS_AVX2 in test_synthetic_safety.py): the
# same draws, other rounding of a few pixel values.
CAPTIONS_TINY_SEED0_DIGESTS_AVX2 = {
    **CAPTIONS_TINY_SEED0_DIGESTS,
    "captions": "2a528608b53a52efbf685b8ee57b5cddcacabe6137049685a96f7c4709dda2a7",
}
CAPTIONS_PLAN_DIGESTS = {
    "tiny": "5875e1635b5cb1d8698b156c652560edfda26617e4cf7554118fda1d257f578e",
    "default": "09d370684f9694c8266b11e67f61d95132e992dcaa6413d5fafbb1b26df39876",
}


def _entry_digests(folder: Path) -> dict[str, str]:
    lines = defaultdict(list)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            relative = path.relative_to(folder).as_posix()
            lines[relative.split("/")[0]].append(
                f"{relative} {hashlib.sha256(path.read_bytes()).hexdigest()}"
            )
    return {entry: hashlib.sha256("\n".join(rows).encode()).hexdigest() for entry, rows in lines.items()}


def _plan_digest(plans) -> str:
    """Every planned camera, image (identity, camera, view, seed, captions, ...) and text file."""
    rows = []
    for plan in plans:
        rows += [repr(camera) for _, camera in sorted(plan.cameras.items())]
        rows += [repr(image) for image in plan.images]
        rows += [
            path + hashlib.sha256(text.encode()).hexdigest() for path, text in sorted(plan.text_files.items())
        ]
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _captions_plan(preset: str, styles: str = "sources"):
    (plan,) = plan_synthpeds(0, get_preset(preset), ["captions"], styles)
    return plan


@pytest.fixture(scope="module")
def diverse_run(tmp_path_factory) -> tuple[Path, dict]:
    """The tiny preset's diverse captioned set, written once."""
    out = tmp_path_factory.mktemp("diverse") / "run"
    generate_synthpeds(out, "tiny", seed=0, layouts="captions", num_workers=1, captioned_styles="diverse")
    return out, read_meta(out)


# -- sources: the set as it was -----------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"captioned_styles": "sources", "captioned_identities": 50}])
def test_a_sources_run_writes_the_bytes_it_wrote_before_the_options(tmp_path, options):
    out = tmp_path / "run"
    summary = generate_synthpeds(out, "tiny", seed=0, layouts="captions", num_workers=1, **options)
    assert _entry_digests(out) in (CAPTIONS_TINY_SEED0_DIGESTS, CAPTIONS_TINY_SEED0_DIGESTS_AVX2)
    assert (summary.captioned_styles, summary.captioned_identities) == ("sources", 50)
    meta = read_meta(out)
    assert "captioned_styles" not in meta and "captioned_identities" not in meta


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_planning_draws_are_unchanged(preset):
    assert _plan_digest([_captions_plan(preset)]) == CAPTIONS_PLAN_DIGESTS[preset]
    assert _plan_digest(plan_synthpeds(0, get_preset(preset), ["captions"])) == CAPTIONS_PLAN_DIGESTS[preset]


# -- diverse: a camera per identity, places of their own, never the held-out style ----------------


def test_every_diverse_identity_has_a_camera_of_its_own(diverse_run):
    out, meta = diverse_run
    cameras_of = defaultdict(set)
    for record in meta["images"]:
        cameras_of[record["pid"]].add((record["camid"], record["camera"]))
    assert len(cameras_of) == get_preset("tiny").caption_ids
    assert all(len(cams) == 1 for cams in cameras_of.values())
    owners = [next(iter(cams)) for cams in cameras_of.values()]
    assert len(set(owners)) == len(owners)  # no two identities share a camera
    assert len(meta["cameras"]) == len(owners) and all("place" in c for c in meta["cameras"].values())
    rows = json.loads((out / "captions" / "reid_raw.json").read_text())
    assert {row["id"] for row in rows} == set(cameras_of)


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_diverse_cameras_keep_away_from_the_held_out_style(preset):
    held_out = get_preset(preset).num_domains - 1
    held_out_style = domain_style(held_out)
    plan = _captions_plan(preset, "diverse")
    distances = [style_distance(camera, held_out_style) for camera in plan.cameras.values()]
    assert min(distances) >= HELD_OUT_MARGIN
    # No place starts from the held-out design, and the places are not the held-out distribution.
    assert all(camera.style_domain % len(DOMAIN_STYLES) != held_out for camera in plan.cameras.values())
    assert all(place != held_out_style for place in plan.places.values())
    # The measure sees membership: the held-out domain's own cameras lie inside its distribution.
    own = domain_cameras(0, domain_name(held_out), held_out, 20)
    assert max(style_distance(camera, held_out_style) for camera in own) == 0.0


def test_meta_records_each_diverse_cameras_style_and_distance(diverse_run):
    _, meta = diverse_run
    held_out_style = domain_style(get_preset("tiny").num_domains - 1)
    for key, camera in meta["cameras"].items():
        assert set(STYLE_DIMENSIONS) <= set(camera) and set(camera["place_ranges"]) == set(STYLE_DIMENSIONS)
        recomputed = style_distance(camera, held_out_style)
        assert camera["held_out_distance"] == pytest.approx(recomputed, abs=1e-3), key
        assert camera["held_out_distance"] >= HELD_OUT_MARGIN
        for name in STYLE_DIMENSIONS:  # every parameter drawn from its camera's own place
            lo, hi = camera["place_ranges"][name]
            assert lo - 1e-4 <= camera[name] <= hi + 1e-4, (key, name)
    places = meta["captioned_places"]
    assert places["held_out_style"] == held_out_style.name
    assert held_out_style.name not in places["allowed_bases"] and held_out_style.name not in places["bases"]
    assert places["min_held_out_distance"] >= HELD_OUT_MARGIN


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_diverse_style_set_is_not_the_sources(preset):
    sources = list(range(get_preset(preset).num_domains - 1))
    source_styles = [domain_style(k) for k in sources]
    diverse = _captions_plan(preset, "diverse")
    shipped = _captions_plan(preset, "sources")
    # The shipped set's cameras all come from the source domains' distributions ...
    assert all(min(style_distance(c, s) for s in source_styles) == 0 for c in shipped.cameras.values())
    # ... the diverse set's from places of their own: each a distinct distribution, none a source's,
    # started from designs no source domain uses too, and nearly all outside every source's.
    places = list(diverse.places.values())
    assert len(set(places)) == len(places) and not set(places) & set(source_styles)
    bases = {camera.style_domain for camera in diverse.cameras.values()}
    assert bases - set(sources) and bases <= set(place_bases(len(sources)))
    outside = [min(style_distance(c, s) for s in source_styles) > 0 for c in diverse.cameras.values()]
    assert np.mean(outside) >= 0.9
    # A broader prior: every style parameter varies more across the diverse cameras.
    for name in STYLE_DIMENSIONS:
        wide = np.std([getattr(c, name) for c in diverse.cameras.values()])
        narrow = np.std([getattr(c, name) for c in shipped.cameras.values()])
        assert wide > narrow, name


def test_diverse_and_sources_sets_hold_the_same_people():
    diverse, shipped = _captions_plan("tiny", "diverse"), _captions_plan("tiny", "sources")
    assert [(i.pid, i.identity, i.seed) for i in diverse.images] == [
        (i.pid, i.identity, i.seed) for i in shipped.images
    ]
    assert diverse.identities.keys() == shipped.identities.keys()


# -- the size option ------------------------------------------------------------------------------


@pytest.mark.parametrize(("styles", "identities"), [("sources", 20), ("diverse", 70)])
def test_captioned_identities_sets_the_number_of_identities(tmp_path, styles, identities):
    out = tmp_path / "run"
    summary = generate_synthpeds(
        out,
        "tiny",
        layouts="captions",
        num_workers=1,
        captioned_styles=styles,
        captioned_identities=identities,
    )
    rows = json.loads((out / "captions" / "reid_raw.json").read_text())
    assert len({row["id"] for row in rows}) == identities == summary.captioned_identities
    meta = read_meta(out)
    assert meta["captioned_identities"] == identities == meta["preset_settings"]["caption_ids"]
    assert len({r["pid"] for r in meta["images"]}) == identities
    card = (out / "README.md").read_text()
    assert f"--captioned-identities {identities}" in card and "the `tiny` preset has 50" in card


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"captioned_styles": "web"}, "captioned_styles must be one of"),
        ({"captioned_identities": 0}, "captioned_identities must be an integer"),
        ({"captioned_identities": 2.5}, "captioned_identities must be an integer"),
    ],
)
def test_bad_captioned_options_are_named(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        generate_synthpeds(tmp_path / "x", "tiny", layouts="captions", **options)


# -- recorded, never silently reused --------------------------------------------------------------


def test_options_are_recorded_and_a_folder_is_reused_only_for_the_same_options(diverse_run, tmp_path):
    out, meta = diverse_run
    assert meta["captioned_styles"] == "diverse" and "captioned_identities" not in meta  # 50: the preset's
    manifest = read_manifest(out)
    assert manifest["settings"]["captioned_styles"] == "diverse"
    assert "--captioned-styles diverse" in regenerate_command(out, manifest)
    card = (out / "README.md").read_text()
    assert "--captioned-styles diverse" in card and "## Single-camera captioned set" in card
    with pytest.raises(FileExistsError, match="no identical run"):
        generate_synthpeds(out, "tiny", seed=0, layouts="captions")  # sources: not this folder
    with pytest.raises(FileExistsError, match="no identical run"):
        generate_synthpeds(
            out, "tiny", seed=0, layouts="captions", captioned_styles="diverse", captioned_identities=9
        )
    again = generate_synthpeds(out, "tiny", seed=0, layouts="captions", captioned_styles="diverse")
    assert again.reused and again.captioned_styles == "diverse"
    shipped = tmp_path / "shipped"
    generate_synthpeds(shipped, "tiny", seed=0, layouts="captions", num_workers=1)
    with pytest.raises(FileExistsError, match="no identical run"):
        generate_synthpeds(shipped, "tiny", seed=0, layouts="captions", captioned_styles="diverse")


def test_options_without_a_captioned_set_change_nothing(tmp_path):
    plain = generate_synthpeds(tmp_path / "a", "tiny", layouts="mlr_cuhk03", num_workers=1)
    other = generate_synthpeds(
        tmp_path / "b",
        "tiny",
        layouts="mlr_cuhk03",
        num_workers=1,
        captioned_styles="diverse",
        captioned_identities=9,
    )
    assert plain.captioned_identities is None and other.captioned_identities is None
    assert _entry_digests(tmp_path / "a") == _entry_digests(tmp_path / "b")


def test_preview_shows_the_diverse_set(diverse_run, tmp_path):
    out, meta = diverse_run
    height = meta["image_size"][0]
    sheet = Image.open(save_preview(out, tmp_path / "preview.png", per_row=12))
    assert sheet.size[1] == 2 * (height + 2 + 12)  # two rows of 12 identities, each at its own place


# -- command line and recipes ----------------------------------------------------------------------


def test_cli_options(tmp_path, capsys):
    assert tuple(CAPTIONED_STYLES) == synth_command.CAPTIONED_STYLES
    out = tmp_path / "cli"
    argv = ["synth", "--out", str(out), "--preset", "tiny", "--layouts", "captions", "--num-workers", "1"]
    assert cli_main([*argv, "--captioned-styles", "diverse", "--captioned-identities", "12"]) == 0
    assert "12 identities, diverse camera styles" in capsys.readouterr().out
    meta = read_meta(out)
    assert (meta["captioned_styles"], meta["captioned_identities"]) == ("diverse", 12)
    for bad in (["--captioned-styles", "web"], ["--captioned-identities", "0"]):
        with pytest.raises(SystemExit):
            cli_main([*argv, *bad])


@dataclass
class Recipe:
    """A recipe config with only the data section every Re-ID recipe shares."""

    data: DataArgs = field(default_factory=DataArgs)


def test_recipe_data_section_passes_the_options_through(tmp_path):
    root = tmp_path / "synthpeds"
    section = {
        "root": str(root),
        "train_domains": ["captions"],
        "eval_domains": ["captions"],
        "synthpeds": {
            "preset": "tiny",
            "num_workers": 1,
            "captioned_styles": "diverse",
            "captioned_identities": 12,
        },
    }
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({"data": section}))
    diverse = load_config(Recipe, config).data
    assert (diverse.synthpeds.captioned_styles, diverse.synthpeds.captioned_identities) == ("diverse", 12)
    prepare_synthpeds(diverse, extra_layouts=["captions"])
    meta = read_meta(root)
    assert (meta["captioned_styles"], meta["captioned_identities"]) == ("diverse", 12)
    prepare_synthpeds(diverse, extra_layouts=["captions"])  # the same options: used as it is
    shipped = load_config(Recipe, config, ["--data.synthpeds.captioned_styles", "sources"]).data
    with pytest.raises(ConfigError, match="captioned_styles 'sources'"):
        prepare_synthpeds(shipped, extra_layouts=["captions"])  # present, but made with other options
    larger = load_config(Recipe, config, ["--data.synthpeds.captioned_identities", "13"]).data
    with pytest.raises(ConfigError, match="captioned_identities 13"):
        prepare_synthpeds(larger, extra_layouts=["captions"])
    with pytest.raises(ConfigError, match="captioned_styles"):
        load_config(Recipe, config, ["--data.synthpeds.captioned_styles", "web"])


# -- the leaderboard's plan ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def leaderboard():
    spec = importlib.util.spec_from_file_location(
        "generalization_leaderboard", ROOT / "benchmarks" / "generalization_leaderboard.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _retext_config(leaderboard):
    """The ReText SynthPeds config's fields the plan reads, on the shipped captioned set as the
    leaderboard loads it (without importing the recipe)."""
    data = yaml.safe_load((ROOT / "recipes" / "configs" / "retext_synthpeds.yaml").read_text())
    d = data["data"]
    shipped = leaderboard.SHIPPED_CAPTIONED_SET
    synthpeds = {
        **d["synthpeds"],
        "captioned_styles": _option(shipped, "--data.synthpeds.captioned_styles"),
        "captioned_identities": int(_option(shipped, "--data.synthpeds.captioned_identities")),
    }
    return SimpleNamespace(
        data=SimpleNamespace(
            layout=d["layout"],
            root=_option(shipped, "--data.root"),
            train_domains=d["train_domains"],
            eval_domains=d["eval_domains"],
            synthpeds=SimpleNamespace(**synthpeds),
        ),
        optim=SimpleNamespace(epochs=data["optim"]["epochs"]),
    )


def _option(extra: list[str], name: str) -> str | None:
    return extra[extra.index(name) + 1] if name in extra else None


def test_leaderboard_plans_one_protocol_for_every_row(leaderboard, tmp_path):
    lb = leaderboard
    cfg = _retext_config(lb)
    plan = lb.plan_leaderboard(
        cfg, lb.fgdi_schedule(), [0, 1, 2], output_dir=tmp_path / "out", runs_root=tmp_path
    )
    single = [name for name, row in lb.ROWS.items() if row.single_camera]
    shared = [name for name, row in lb.ROWS.items() if not row.single_camera]
    assert set(single) == {lb.IDENTITIES, lb.RETEXT, "ReText w/o reconstruction", "ReText w/o structure"}
    assert set(shared) == {lb.TWO_STAGE, lb.BASE, lb.FGDI}
    assert len(plan) == 3 * (len(shared) + 2 * len(single))
    assert not any(p.reused for p in plan)
    assert len({p.run.output_dir for p in plan}) == len(plan)
    for p in plan:
        extra = p.run.extra
        assert (p.column == lb.BOTH) == (p.row in shared)
        assert _option(extra, "--optim.epochs") is None  # the shipped budget: the configs' own steps
        if p.row == lb.TWO_STAGE:
            assert p.run.recipe == "clip_reid" and _option(extra, "--stage2.epochs") == str(cfg.optim.epochs)
            assert json.loads(_option(extra, "--data.eval_domains")) == ["synthpeds_d3"]
        elif p.row == lb.FGDI:
            assert p.run.recipe == "clip_fgdi" and extra == []
        elif p.row == lb.BASE:  # the shipped folder: the multi-camera domains every set shares
            assert extra == ["--captions.mode", "none", *lb.SHIPPED_CAPTIONED_SET]
        else:
            root = f"data/synthpeds_{p.column}_2000"
            assert (
                _option(extra, "--data.root") == root
                and _option(extra, "--captions.root") == f"{root}/captions"
            )
            assert _option(extra, "--data.synthpeds.captioned_styles") == p.column
            assert _option(extra, "--data.synthpeds.captioned_identities") == "2000"
    by_row = defaultdict(list)
    for p in plan:
        by_row[(p.row, p.column)].append(p.run.seed)
    assert all(seeds == [0, 1, 2] for seeds in by_row.values())
    assert {column for _, column in by_row} == {lb.BOTH, "sources", "diverse"}


def test_leaderboard_double_budget_doubles_every_image_encoder_schedule(leaderboard, tmp_path):
    lb = leaderboard
    cfg = _retext_config(lb)
    fgdi = lb.fgdi_schedule()
    plan = lb.plan_leaderboard(
        cfg,
        fgdi,
        [0],
        budget="double",
        variants=("diverse",),
        output_dir=tmp_path / "out",
        runs_root=tmp_path,
    )
    assert {p.column for p in plan} == {lb.BOTH, "diverse"}
    for p in plan:
        extra = p.run.extra
        assert "/double/" in str(p.run.output_dir)
        if p.run.recipe == "retext":
            assert _option(extra, "--optim.epochs") == str(2 * cfg.optim.epochs)
        elif p.run.recipe == "clip_reid":
            assert _option(extra, "--stage2.epochs") == str(2 * cfg.optim.epochs)
            assert json.loads(_option(extra, "--stage2.milestones")) == [16, 21]
        else:
            assert _option(extra, "--image_encoder.prior_epochs") == str(2 * fgdi["prior_epochs"])
            assert _option(extra, "--image_encoder.epochs") == str(2 * fgdi["epochs"])
            assert json.loads(_option(extra, "--image_encoder.milestones")) == [
                2 * m for m in fgdi["milestones"]
            ]
    with pytest.raises(ValueError, match="budget"):
        lb.plan_leaderboard(cfg, fgdi, [0], budget="triple")


def test_leaderboard_plans_only_the_rows_asked_for(leaderboard, tmp_path):
    lb = leaderboard
    cfg = _retext_config(lb)
    rows = (lb.RETEXT, lb.BASE)  # table order wins over the order asked
    plan = lb.plan_leaderboard(
        cfg, lb.fgdi_schedule(), [0, 1], variants=("diverse",), output_dir=tmp_path, rows=rows
    )
    assert [(p.row, p.column, p.run.seed) for p in plan] == [
        (lb.BASE, lb.BOTH, 0),
        (lb.RETEXT, "diverse", 0),
        (lb.BASE, lb.BOTH, 1),
        (lb.RETEXT, "diverse", 1),
    ]
    assert set(lb.ROW_KEYS.values()) == set(lb.ROWS)
    with pytest.raises(ValueError, match="rows"):
        lb.plan_leaderboard(cfg, lb.fgdi_schedule(), [0], rows=("ReText w/o text",))


def test_leaderboard_reuses_only_identical_finished_runs(leaderboard, tmp_path):
    lb = leaderboard
    cfg = _retext_config(lb)
    fgdi = lb.fgdi_schedule()
    theirs = tmp_path / "runs" / "retext_generalization" / "retext_seed0"
    theirs.mkdir(parents=True)
    for name in ("eval_results.json", "train_results.json"):
        (theirs / name).write_text("{}")

    def runs(**kwargs):
        plan = lb.plan_leaderboard(
            cfg, fgdi, [0], output_dir=tmp_path / "out", runs_root=tmp_path / "runs", **kwargs
        )
        return {(p.row, p.column): p for p in plan}

    shipped_set = runs(captioned_identities=400)  # the shipped captioned set: the ReText benchmark's run
    assert (
        shipped_set[(lb.RETEXT, "sources")].reused
        and shipped_set[(lb.RETEXT, "sources")].run.output_dir == theirs
    )
    assert shipped_set[(lb.RETEXT, "sources")].run.extra == lb.SHIPPED_CAPTIONED_SET
    assert not shipped_set[(lb.RETEXT, "diverse")].reused
    assert not runs()[(lb.RETEXT, "sources")].reused  # 2000 identities: another run
    assert not runs(captioned_identities=400, budget="double")[(lb.RETEXT, "sources")].reused


def test_leaderboard_verdict_weighs_the_gain_against_the_spread(leaderboard):
    rows = {
        "a": {"diverse": [{"mAP": v} for v in (0.40, 0.41, 0.42)]},
        "b": {"diverse": [{"mAP": v} for v in (0.30, 0.31, 0.32)]},
        "c": {"diverse": [{"mAP": v} for v in (0.39, 0.43, 0.41)]},
    }
    gain, spread, answer = leaderboard.verdict(rows, "a", "b", "diverse", "SynthPeds d3")
    assert answer == "YES" and gain == pytest.approx(10.0) and spread > 0
    assert leaderboard.verdict(rows, "a", "c", "diverse", "SynthPeds d3")[2] == "NO"
    one = {name: {"diverse": entries["diverse"][:1]} for name, entries in rows.items()}
    assert "no verdict" in leaderboard.verdict(one, "a", "b", "diverse", "SynthPeds d3")[2]
