"""Model cards carry the run's numbers as model-index metadata; pushing uploads the run folder."""

from unittest import mock

import pytest
from huggingface_hub import HfApi, ModelCard

from hf_reid.hub import CardInfo, available_templates, push_run_to_hub, render_model_card, write_model_card

RESULTS = {"SynthPeds d3": {"mAP": 0.4567, "rank-1": 0.6, "mINP": 0.12, "not-a-metric": 3.0}}


def test_card_round_trips_results_as_model_index(tmp_path):
    info = CardInfo(
        "clip_reid", "org/clip-reid-synth", base_model="hf-reid/synthclip", datasets=["synthpeds"]
    )
    path = write_model_card(tmp_path, info, RESULTS)
    card = ModelCard.load(path)
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values == {"mAP": 45.67, "Rank-1": 60.0, "mINP": 12.0}
    assert all(r.dataset_name == "SynthPeds d3" for r in card.data.eval_results)
    assert card.data.base_model == "hf-reid/synthclip"
    assert "person-reid" in card.data.tags and "clip_reid" in card.data.tags
    # The human-readable table shows percentages and the usage snippet names the repo.
    assert "| SynthPeds d3 | 45.7 | 60.0 |" in card.text
    assert 'AutoModel.from_pretrained("org/clip-reid-synth"' in card.text


def test_unknown_method_names_the_templates():
    assert "clip_reid" in available_templates()
    with pytest.raises(ValueError, match="available"):
        render_model_card(CardInfo("clip_reidd", "org/x"), RESULTS)


def test_push_uploads_folder_without_checkpoints(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    calls = {}

    def fake_create_repo(self, repo_id, **kwargs):
        calls["repo"] = (repo_id, kwargs)

    def fake_upload_folder(self, **kwargs):
        calls["upload"] = kwargs
        return mock.MagicMock(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc")

    with (
        mock.patch.object(HfApi, "create_repo", fake_create_repo),
        mock.patch.object(HfApi, "upload_folder", fake_upload_folder),
    ):
        url = push_run_to_hub(tmp_path, "org/clip-reid-synth", private=True)
    assert url.endswith("/commit/abc")
    assert calls["repo"][0] == "org/clip-reid-synth" and calls["repo"][1]["private"] is True
    assert calls["upload"]["folder_path"] == str(tmp_path)
    assert "checkpoints/*" in calls["upload"]["ignore_patterns"]


def test_push_refuses_a_folder_without_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        push_run_to_hub(tmp_path, "org/x")
