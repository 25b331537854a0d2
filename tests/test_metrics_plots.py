"""plot_cmc and plot_ranked_list write PNGs whose content follows the inputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hf_reid.metrics import RankResult, plot_cmc, plot_ranked_list


def result(cmc) -> RankResult:
    return RankResult(
        cmc=np.asarray(cmc, dtype=float), mAP=0.5, mINP=0.2, num_valid_queries=4, num_invalid_queries=0
    )


def colour_counts(path):
    """Pixels that are clearly the match green or the mismatch red."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    red = (r > 170) & (g < 90) & (b < 90)
    green = (g > 120) & (r < 90) & (b < 110)
    return int(red.sum()), int(green.sum())


def test_plot_cmc_writes_png_with_one_line_per_result(tmp_path):
    single = plot_cmc(result([0.5, 0.75, 1.0]), tmp_path / "a" / "cmc.png")
    assert single.exists() and Image.open(single).format == "PNG"
    # Lines are drawn in matplotlib's default colours: blue for the first, orange for the second.
    pair = plot_cmc({"base": result([0.2, 0.4, 0.6]), "ours": result([0.5, 0.75, 1.0])}, tmp_path / "b.png")
    rgb = np.asarray(Image.open(pair).convert("RGB")).astype(int)
    orange = (np.abs(rgb - [255, 127, 14]).sum(-1) < 40).sum()
    assert orange > 50
    rgb_single = np.asarray(Image.open(single).convert("RGB")).astype(int)
    assert (np.abs(rgb_single - [255, 127, 14]).sum(-1) < 40).sum() == 0


def test_plot_cmc_bad_input(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plot_cmc({}, tmp_path / "x.png")
    with pytest.raises(TypeError, match="RankResult"):
        plot_cmc({"a": {"rank-1": 0.5}}, tmp_path / "x.png")


def test_ranked_list_borders_follow_matches(tmp_path):
    grey = [Image.new("RGB", (32, 64), (128, 128, 128)) for _ in range(6)]
    query_path = tmp_path / "q.png"
    grey[0].save(query_path)
    ranked = np.array([[1, 2, 3], [3, 4, 5]])
    all_right = plot_ranked_list(
        [query_path, grey[0]], grey, ranked, np.ones((2, 3), bool), tmp_path / "r.png", 3
    )
    all_wrong = plot_ranked_list(
        [query_path, grey[0]], grey, ranked, np.zeros((2, 3), bool), tmp_path / "w.png", 3
    )
    mixed = plot_ranked_list(
        [query_path, grey[0]],
        grey,
        ranked,
        [[True, False, False], [False, False, True]],
        tmp_path / "m.png",
        3,
    )
    red, green = colour_counts(all_right)
    assert green > 500 and red == 0
    red, green = colour_counts(all_wrong)
    assert red > 500 and green == 0
    red_mixed, green_mixed = colour_counts(mixed)
    assert red_mixed > 1.5 * green_mixed > 0  # four red borders, two green ones


def test_ranked_list_bad_input(tmp_path):
    images = [Image.new("RGB", (8, 16)) for _ in range(3)]
    with pytest.raises(ValueError, match="ranked_indices"):
        plot_ranked_list(images[:1], images, [[0, 1]], [[True, True]], tmp_path / "x.png", top_k=3)
    with pytest.raises(ValueError, match="must index"):
        plot_ranked_list(images[:1], images, [[0, 7]], [[True, True]], tmp_path / "x.png", top_k=2)
    with pytest.raises(ValueError, match="Cannot read image"):
        plot_ranked_list([tmp_path / "missing.jpg"], images, [[0]], [[True]], tmp_path / "x.png", top_k=1)
