"""The real Market-1501 attribute table that SynthPeds draws its identities from.

The table (27 identity-level attributes of all 1,501 Market-1501 identities) ships with hf_reid in
``hf_reid/assets/market1501_attributes/market_attribute.json``. Cite Lin et al., "Improving Person
Re-identification by Attribute and Identity Learning", Pattern Recognition 2019, and Zheng et al.,
"Scalable Person Re-identification: A Benchmark", ICCV 2015.

Codes are 1-based as in the original ``.mat`` file: gender 1=male 2=female; hair 1=short 2=long;
up 1=long sleeve 2=short sleeve; down 1=long lower-body clothing 2=short; clothes 1=dress 2=pants;
hat, backpack, bag, handbag 1=no 2=yes; age 1=young 2=teenager 3=adult 4=old; colour flags 1=no 2=yes.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np

UPPER_COLORS: tuple[str, ...] = ("black", "white", "red", "purple", "yellow", "gray", "blue", "green")
"""Upper-body colour flags of the table (``up<colour>``)."""

LOWER_COLORS: tuple[str, ...] = (
    "black",
    "white",
    "pink",
    "purple",
    "yellow",
    "gray",
    "blue",
    "green",
    "brown",
)
"""Lower-body colour flags of the table (``down<colour>``)."""

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "gender",
    "age",
    "hair",
    "up",
    "down",
    "clothes",
    "hat",
    "backpack",
    "bag",
    "handbag",
    *(f"up{c}" for c in UPPER_COLORS),
    *(f"down{c}" for c in LOWER_COLORS),
)
"""All 27 attributes in a fixed order (the order of the lists in ``synthpeds_meta.json``)."""

CLOTHING_ATTRIBUTES: tuple[str, ...] = (
    "up",
    "down",
    "clothes",
    *(f"up{c}" for c in UPPER_COLORS),
    *(f"down{c}" for c in LOWER_COLORS),
)
"""The attributes that change with an outfit (clothes change keeps the others)."""

_TABLE_RESOURCE = ("hf_reid", "assets/market1501_attributes/market_attribute.json")
NO, YES = 1, 2


@functools.lru_cache(maxsize=1)
def load_market_attributes() -> tuple[tuple[str, dict[str, int]], ...]:
    """All 1,501 real identities as ``(market_pid, {attribute: code})``, sorted by pid.

    Raises:
        ValueError: if the shipped table is missing an attribute (a broken install).
    """
    path = resources.files(_TABLE_RESOURCE[0]).joinpath(_TABLE_RESOURCE[1])
    table = json.loads(path.read_text(encoding="utf-8"))
    rows: dict[str, dict[str, int]] = {}
    for split in ("train", "test"):
        for pid, codes in table[split].items():
            missing = [name for name in ATTRIBUTE_NAMES if name not in codes]
            if missing:
                raise ValueError(
                    f"{path}: identity {pid} ({split}) lacks attributes {missing}; reinstall hf_reid "
                    "(the shipped Market-1501 attribute table is damaged)."
                )
            rows[pid] = {name: int(codes[name]) for name in ATTRIBUTE_NAMES}
    return tuple(sorted(rows.items()))


def attribute_vector(attributes: dict[str, int]) -> np.ndarray:
    """Encode attribute codes as a float vector for attribute-only matching (the oracle).

    Binary attributes become 0/1, age becomes a one-hot of its four classes. Two identities
    with the same attributes get the same vector.
    """
    values: list[float] = []
    for name in ATTRIBUTE_NAMES:
        code = attributes[name]
        if name == "age":
            values.extend(float(code == k) for k in (1, 2, 3, 4))
        else:
            values.append(float(code == YES))
    return np.asarray(values, dtype=np.float32)


def upper_color_names(attributes: dict[str, int]) -> list[str]:
    """Upper-body colour names flagged in ``attributes`` (may be empty: "other" colours)."""
    return [c for c in UPPER_COLORS if attributes[f"up{c}"] == YES]


def lower_color_names(attributes: dict[str, int]) -> list[str]:
    """Lower-body colour names flagged in ``attributes`` (may be empty: "other" colours)."""
    return [c for c in LOWER_COLORS if attributes[f"down{c}"] == YES]
