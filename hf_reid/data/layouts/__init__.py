"""One ``datasets`` builder per Re-ID dataset layout (see docs/LAYOUTS.md and docs/DATASETS.md).

Use :func:`hf_reid.data.load_reid_dataset` rather than these classes directly; it adds option
checking and the layout registry.
"""

from .base import ImageRecord, ReidBuilder, ReidBuilderConfig, ReidDataError, SplitScan
from .captions import Captions, CaptionsConfig
from .cuhk03 import Cuhk03Np, Cuhk03NpConfig, MlrCuhk03
from .cuhk_sysu import CuhkSysu
from .custom import Custom, CustomConfig
from .ltcc import Ltcc, LtccConfig
from .market import DukeMtmcReid, Market1501, MarketStyleBuilder, MarketStyleConfig, SynthPeds
from .msmt17 import Msmt17, Msmt17Config
from .protocol1 import (
    Cuhk02,
    Grid,
    GridConfig,
    Ilids,
    Prid,
    PridConfig,
    RandomSplitsBuilder,
    RandomSplitsConfig,
    Viper,
)
from .sysu_mm01 import SYSU_MM01_CAMERA_GROUPS, SysuMm01, SysuMm01Config

BUILTIN_LAYOUTS: dict[str, type[ReidBuilder]] = {
    builder.LAYOUT_NAME: builder
    for builder in (
        Market1501,
        DukeMtmcReid,
        Msmt17,
        Cuhk03Np,
        CuhkSysu,
        SysuMm01,
        Ltcc,
        MlrCuhk03,
        Captions,
        Custom,
        SynthPeds,
        Viper,
        Prid,
        Grid,
        Ilids,
        Cuhk02,
    )
}
"""Layout name -> builder class for every layout hf_reid ships."""

__all__ = [
    "BUILTIN_LAYOUTS",
    "SYSU_MM01_CAMERA_GROUPS",
    "Captions",
    "CaptionsConfig",
    "Cuhk02",
    "Cuhk03Np",
    "Cuhk03NpConfig",
    "CuhkSysu",
    "Custom",
    "CustomConfig",
    "DukeMtmcReid",
    "Grid",
    "GridConfig",
    "Ilids",
    "ImageRecord",
    "Ltcc",
    "LtccConfig",
    "Market1501",
    "MarketStyleBuilder",
    "MarketStyleConfig",
    "MlrCuhk03",
    "Msmt17",
    "Msmt17Config",
    "Prid",
    "PridConfig",
    "RandomSplitsBuilder",
    "RandomSplitsConfig",
    "ReidBuilder",
    "ReidBuilderConfig",
    "ReidDataError",
    "SplitScan",
    "SynthPeds",
    "SysuMm01",
    "SysuMm01Config",
    "Viper",
]
