"""The one schema every Re-ID split in hf_reid has.

Every builder (real layouts and SynthPeds alike) yields rows with exactly these columns, so that
splits of different datasets concatenate without casting and every consumer can rely on them.
Columns a layout does not have get a neutral value, documented per column below.
"""

from datasets import ClassLabel, Features, Image, List, Value

MODALITIES = ["visible", "infrared"]
"""Names of the ``modality`` class label: 0 = visible (RGB), 1 = infrared."""

NO_CLOTHES_ID = -1
"""``clothes_id`` of layouts without clothes labels."""

REID_FEATURES = Features(
    {
        # The decoded crop (the bytes are embedded when a split is saved or pushed).
        "image": Image(),
        # Identity as written by the layout (file name or list file). Junk (-1) is dropped at
        # load time; distractors (0 in Market-1501 / DukeMTMC) stay in the gallery as negatives.
        "pid": Value("int64"),
        # 0-based camera index (Market "c1" -> 0). Layouts without cameras get 0 everywhere;
        # see hf_reid.metrics.evaluate_rank(cross_camera=False) for how evaluation treats them.
        "camid": Value("int64"),
        # Path of the source file relative to the dataset root (stable across machines).
        "path": Value("string"),
        # Name of the source dataset or SynthPeds domain, e.g. "market1501" or "synthpeds_d2".
        "domain": Value("string"),
        # Outfit index within the identity (LTCC, SynthPeds clothes change); -1 where unknown.
        "clothes_id": Value("int64"),
        # Sensor modality (SYSU-MM01 / SynthPeds infrared cameras); visible elsewhere.
        "modality": ClassLabel(names=MODALITIES),
        # Free-text descriptions (caption JSON layouts); empty elsewhere.
        "captions": List(Value("string")),
    }
)

COLUMNS = list(REID_FEATURES)
