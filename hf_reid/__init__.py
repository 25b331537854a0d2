"""hf_reid: vision-language person re-identification on the Hugging Face stack.

Four CLIP-based methods (CLIP-ReID, ReText, CLIP-FGDI, ITKM) as ``transformers`` models,
``datasets`` builders for the standard Re-ID layouts and the SynthPeds benchmark, metrics that
give the standard Market-1501 numbers in bounded memory, and Accelerate recipes.
"""

import os
import re
import sys
from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = frozenset(
    {"cli", "commands", "data", "hub", "metrics", "models", "report", "synthclip", "tokenization", "training"}
)


def _running_the_cli() -> bool:
    """Whether this interpreter was started to run the ``hf-reid`` command: its console script
    (``sys.argv[0]`` is ``.../hf-reid``) or ``python -m hf_reid.cli``."""
    argv = getattr(sys, "argv", None) or [""]
    script = re.sub(r"(-script\.pyw?|\.exe)$", "", os.path.basename(str(argv[0])))
    if script == "hf-reid":
        return True
    orig_argv = list(getattr(sys, "orig_argv", ()))
    return "-m" in orig_argv[:-1] and orig_argv[orig_argv.index("-m") + 1] == "hf_reid.cli"


# Importing hf_reid registers its model types with the transformers Auto classes, so that
#   import hf_reid; AutoModel.from_pretrained("org/retext-clip")
# returns hf_reid's classes (without hf_reid, trust_remote_code=True loads the saved code).
# That needs torch and transformers (seconds to import). The hf-reid command itself skips it, so
# that `hf-reid --help` answers at once: its commands import what they use (hf_reid.models
# registers the models whenever it is imported).
if not _running_the_cli():
    from . import models  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
