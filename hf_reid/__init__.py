"""hf_reid: vision-language person re-identification on the Hugging Face stack.

Four CLIP-based methods (CLIP-ReID, ReText, CLIP-FGDI, ITKM) as ``transformers`` models,
``datasets`` builders for the standard Re-ID layouts and the SynthPeds benchmark, metrics that
give the standard Market-1501 numbers in bounded memory, and Accelerate recipes.
"""

__version__ = "0.1.0"

# Importing hf_reid registers its model types with the transformers Auto classes, so that
#   import hf_reid; AutoModel.from_pretrained("org/retext-clip")
# returns hf_reid's classes (without hf_reid, trust_remote_code=True loads the saved code).
from . import models  # noqa: F401
