"""SynthPeds: a procedural person re-identification benchmark that behaves like real data.

``generate_synthpeds(out_dir, preset="default", seed=0)`` (CLI: ``hf-reid synth --out DIR``)
renders pedestrian crops and writes them in the layouts of the real datasets, so the real
builders (:func:`hf_reid.data.load_reid_dataset`) read them:

- ``synthpeds_d0`` .. ``synthpeds_d{K-1}``: Market-1501 style, one folder per domain. Each domain
  has its own distribution of camera styles (background, illumination, white balance, blur,
  noise, resolution, scale, viewpoint mix, occlusion); **the last domain is the held-out target
  domain**, whose styles no other folder uses.
- ``ltcc``: clothes change (same body, hair and accessories; other outfits, with clothes ids).
- ``sysu_mm01``: visible-infrared (cameras 3 and 6 render near-infrared intensity).
- ``mlr_cuhk03``: low-resolution queries against a full-resolution gallery.
- ``captions``: single-camera captioned set; ``pretrain``: caption pairs for a tiny CLIP.
  ``captioned_styles="diverse"`` films every captioned identity with its own camera at a place
  of its own (never the held-out domain's style); ``captioned_identities`` sets its size.

Identities take the attribute vectors of real Market-1501 identities (shipped table; cite Lin et
al., Pattern Recognition 2019) plus hidden details no attribute names, so attribute-identical
identities stay distinguishable, but only by fine cues. ``synthpeds_meta.json`` records the
ground truth of every image.
"""

from .attributes import ATTRIBUTE_NAMES, attribute_vector, load_market_attributes
from .cameras import (
    DOMAIN_STYLES,
    HELD_OUT_MARGIN,
    CameraStyle,
    DomainStyle,
    domain_cameras,
    domain_style,
    place_bases,
    place_cameras,
    place_style,
    sample_camera,
    style_distance,
)
from .captions import caption_image, describe
from .generate import IMAGE_SIZES, SynthPedsSummary, generate_synthpeds
from .identities import Identity, Outfit, make_identity
from .layouts import CAPTIONED_STYLES, LAYOUT_NAMES, ImagePlan, LayoutPlan, domain_name, plan_synthpeds
from .metadata import META_FILE, read_meta
from .presets import PRESETS, SynthPedsPreset, get_preset
from .preview import save_preview
from .render import PedestrianRenderer

__all__ = [
    "ATTRIBUTE_NAMES",
    "CAPTIONED_STYLES",
    "DOMAIN_STYLES",
    "HELD_OUT_MARGIN",
    "IMAGE_SIZES",
    "LAYOUT_NAMES",
    "META_FILE",
    "PRESETS",
    "CameraStyle",
    "DomainStyle",
    "Identity",
    "ImagePlan",
    "LayoutPlan",
    "Outfit",
    "PedestrianRenderer",
    "SynthPedsPreset",
    "SynthPedsSummary",
    "attribute_vector",
    "caption_image",
    "describe",
    "domain_cameras",
    "domain_name",
    "domain_style",
    "generate_synthpeds",
    "get_preset",
    "load_market_attributes",
    "make_identity",
    "place_bases",
    "place_cameras",
    "place_style",
    "plan_synthpeds",
    "read_meta",
    "sample_camera",
    "save_preview",
    "style_distance",
]
