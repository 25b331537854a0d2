"""The CLIP backbone adapter every hf_reid model builds on.

It wraps a ``transformers.CLIPModel`` and changes only what Re-ID needs:

* the vision tower runs natively on a non-square input (256x128 for CLIP-ReID), with a position
  table of one entry per patch of that grid, resized **once** from the pretrained square table,
  optionally with overlapping patches (a patch stride smaller than the patch size);
* an optional SIE camera embedding is added to the CLS token only, before the position
  embedding, exactly as CLIP-ReID does;
* the image forward returns the three CLS features CLIP-ReID trains on: after the
  second-to-last block (no norm), after the post-layernorm, and projected;
* a text forward that takes token *embeddings* (``CLIPTextModel.forward`` in transformers 5 has
  no ``inputs_embeds``), so that learnable prompt tokens can be spliced in;
* an MAE-style image forward on a subset of the patches (masked patches are dropped before the
  transformer), for masked-image reconstruction;
* optionally no text tower at all, for models that bring their own text encoder.

The CLIP weights keep their ``transformers`` names under ``clip.``; the only new module is the
vision embeddings (same parameter names, resized position table).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig
from transformers.masking_utils import create_causal_mask
from transformers.models.clip.modeling_clip import CLIPVisionEmbeddings

POSITION_TABLE_KEY = "vision_model.embeddings.position_embedding.weight"
"""Key of the vision position table in a ``CLIPModel`` state dict (the one tensor that is resized)."""


def _as_pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def patch_grid(image_size: tuple[int, int], patch_size: int, stride: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns of patches a ``patch_size`` convolution with ``stride`` makes of ``image_size``."""
    return (
        (image_size[0] - patch_size) // stride[0] + 1,
        (image_size[1] - patch_size) // stride[1] + 1,
    )


def resize_position_table(table: torch.Tensor, grid: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize a CLIP position table ``(1 + n*n, D)`` (CLS first, square grid) to ``(1 + h*w, D)``.

    The CLS entry is kept; the grid entries are interpolated as an image (``align_corners=False``).
    A table already of the target size is returned unchanged.
    """
    n_grid = table.shape[0] - 1
    side = math.isqrt(n_grid)
    if side * side != n_grid:
        raise ValueError(
            f"the pretrained position table has {n_grid} patch entries, which is not a square grid; "
            "only square CLIP checkpoints can be resized."
        )
    if (side, side) == tuple(grid):
        return table.clone()
    dim = table.shape[1]
    patches = table[1:].reshape(1, side, side, dim).permute(0, 3, 1, 2).float()
    patches = nn.functional.interpolate(patches, size=tuple(grid), mode=mode, align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], dim).to(table.dtype)
    return torch.cat([table[:1], patches], dim=0)


def end_of_text_position(token_ids: list[int], eos_token_id: int | list[int] | None) -> int:
    """Position whose output CLIP pools for a tokenised text, with the rule ``CLIPTextModel`` uses.

    Checkpoints whose text config carries the legacy ``eos_token_id == 2`` (the OpenAI releases)
    pool at the largest token id, which is the end-of-text token of the real CLIP vocabulary;
    others pool at the first ``eos_token_id``.
    """
    if eos_token_id == 2:
        return token_ids.index(max(token_ids))
    eos_ids = eos_token_id if isinstance(eos_token_id, list) else [eos_token_id]
    for position, token in enumerate(token_ids):
        if token in eos_ids:
            return position
    raise ValueError(
        f"the prompt token ids {token_ids} contain no end-of-text token (eos_token_id={eos_token_id}); "
        "tokenise the template with the model's tokenizer."
    )


class ReIDImageFeatures(NamedTuple):
    """The CLS features of one image batch, as CLIP-ReID names them."""

    intermediate: torch.Tensor
    """``x11``: CLS after the second-to-last block, no layernorm (B, width)."""
    pooled: torch.Tensor
    """``x12``: CLS after the last block and the post-layernorm (B, width)."""
    projected: torch.Tensor
    """``xproj``: ``visual_projection(x12)``, the CLIP image feature compared with text (B, proj)."""
    last_hidden_state: torch.Tensor
    """All tokens after the last block, before the post-layernorm (B, 1 + patches, width)."""


class ReIDCLIPVisionEmbeddings(CLIPVisionEmbeddings):
    """CLIP patch + position embeddings on a native H x W grid, with an optional patch stride.

    Parameter names and shapes match ``CLIPVisionEmbeddings`` except the position table, which
    has one row per patch of the Re-ID grid (plus CLS). Use :meth:`load_square_position_table`
    to fill it from a pretrained square CLIP table.
    """

    def __init__(
        self,
        config: CLIPVisionConfig,
        image_size: int | tuple[int, int],
        stride_size: int | tuple[int, int] | None = None,
    ):
        super().__init__(config)
        self.reid_image_size = _as_pair(image_size)
        self.stride_size = _as_pair(stride_size) if stride_size else (self.patch_size, self.patch_size)
        if self.stride_size != (self.patch_size, self.patch_size):
            self.patch_embedding = nn.Conv2d(
                in_channels=config.num_channels,
                out_channels=self.embed_dim,
                kernel_size=self.patch_size,
                stride=self.stride_size,
                bias=False,
            )
        self.grid = patch_grid(self.reid_image_size, self.patch_size, self.stride_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.num_positions = self.num_patches + 1
        self.position_embedding = nn.Embedding(self.num_positions, self.embed_dim)
        self.position_ids = nn.Buffer(torch.arange(self.num_positions).expand((1, -1)), persistent=False)

    @torch.no_grad()
    def load_square_position_table(self, table: torch.Tensor, mode: str = "bicubic") -> None:
        """Fill the position table from a pretrained square CLIP table, resized once with ``mode``."""
        resized = resize_position_table(table.to(self.position_embedding.weight.device), self.grid, mode)
        self.position_embedding.weight.copy_(resized)

    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        cls_offset: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed ``pixel_values`` (B, C, H, W); ``cls_offset`` (B, width) is added to the CLS token
        before the position embedding (SIE). ``interpolate_pos_encoding`` is accepted for
        compatibility with ``CLIPVisionModel.forward`` and ignored: the grid is native."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must have shape (batch, {self.config.num_channels}, height, width), got "
                f"{tuple(pixel_values.shape)}."
            )
        height, width = pixel_values.shape[-2:]
        if (height, width) != self.reid_image_size:
            expected = self.reid_image_size
            raise ValueError(
                f"pixel_values are {height}x{width} (HxW) but this model takes {expected[0]}x{expected[1]} "
                f"(config.image_size). Preprocess the images with the model's image processor "
                f"(AutoImageProcessor.from_pretrained(<model folder>) resizes to {expected[0]}x{expected[1]}), "
                f"or build a model for {height}x{width} (image_size=({height}, {width}))."
            )
        batch_size = pixel_values.shape[0]
        patches = self.patch_embedding(pixel_values.to(dtype=self.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(batch_size, 1, -1)
        if cls_offset is not None:
            cls = cls + cls_offset.to(cls.dtype).unsqueeze(1)
        embeddings = torch.cat([cls, patches], dim=1)
        return embeddings + self.position_embedding(self.position_ids)


class CameraEmbedding(nn.Module):
    """SIE: one learnable vector per camera, scaled by a coefficient (added to the CLS token)."""

    def __init__(self, num_cameras: int, dim: int, coefficient: float):
        super().__init__()
        self.num_cameras = num_cameras
        self.coefficient = float(coefficient)
        self.weight = nn.Parameter(torch.zeros(num_cameras, dim))

    def forward(self, camids: torch.Tensor) -> torch.Tensor:
        camids = camids.long()
        if camids.numel() and (int(camids.min()) < 0 or int(camids.max()) >= self.num_cameras):
            raise ValueError(
                f"camids must be in [0, {self.num_cameras}) (config.num_cameras={self.num_cameras}); got "
                f"values in [{int(camids.min())}, {int(camids.max())}]. camids are 0-based."
            )
        return self.coefficient * self.weight[camids]


class ReIDCLIPBackbone(nn.Module):
    """A ``CLIPModel`` with a native Re-ID vision grid, optional SIE, and the features Re-ID uses."""

    def __init__(
        self,
        clip_config: CLIPConfig,
        image_size: tuple[int, int],
        stride_size: tuple[int, int] | None = None,
        num_cameras: int = 0,
        sie_coe: float = 1.0,
        text_tower: bool = True,
    ):
        """``text_tower=False`` leaves out CLIP's text model and text projection (``clip.text_model``
        and ``clip.text_projection`` are ``None``); :meth:`load_clip_weights` then skips their weights."""
        super().__init__()
        self.clip = CLIPModel._from_config(clip_config)
        self.clip.vision_model.embeddings = ReIDCLIPVisionEmbeddings(
            clip_config.vision_config, image_size, stride_size
        )
        if not text_tower:
            self.clip.text_model = None
            self.clip.text_projection = None
        vision_width = clip_config.vision_config.hidden_size
        self.camera_embedding = CameraEmbedding(num_cameras, vision_width, sie_coe) if num_cameras else None

    @property
    def vision_width(self) -> int:
        return self.clip.config.vision_config.hidden_size

    @property
    def text_width(self) -> int:
        return self.clip.config.text_config.hidden_size

    @property
    def projection_dim(self) -> int:
        return self.clip.visual_projection.out_features

    @property
    def has_text_tower(self) -> bool:
        return self.clip.text_model is not None

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.clip.text_model.embeddings.token_embedding

    @torch.no_grad()
    def load_clip_weights(self, clip: CLIPModel, pos_interpolation: str = "bicubic") -> None:
        """Copy every weight of a pretrained ``clip`` into this backbone; its square vision position
        table is resized once to the Re-ID grid with ``pos_interpolation``."""
        state = dict(clip.state_dict())
        table = state.pop(POSITION_TABLE_KEY)
        if not self.has_text_tower:
            state = {k: v for k, v in state.items() if not k.startswith(("text_model.", "text_projection."))}
        result = self.clip.load_state_dict(state, strict=False)
        unexpected = list(result.unexpected_keys)
        missing = [k for k in result.missing_keys if k != POSITION_TABLE_KEY]
        if unexpected or missing:
            raise ValueError(
                "the CLIP checkpoint does not match the backbone built from its config: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}."
            )
        self.clip.vision_model.embeddings.load_square_position_table(table, pos_interpolation)

    def encode_image(
        self, pixel_values: torch.Tensor, camids: torch.Tensor | None = None
    ) -> ReIDImageFeatures:
        """Run the vision tower on ``pixel_values`` and return the three CLS features.

        ``camids`` (B,) adds the SIE camera embedding when the backbone has one; they are ignored
        otherwise (as in CLIP-ReID without SIE).
        """
        vision = self.clip.vision_model
        cls_offset = None
        if camids is not None and self.camera_embedding is not None:
            cls_offset = self.camera_embedding(camids.to(pixel_values.device))
        hidden = vision.embeddings(pixel_values, cls_offset=cls_offset)
        hidden = vision.pre_layrnorm(hidden)
        layers = vision.encoder.layers
        for layer in layers[:-1]:
            hidden = layer(hidden, None)
        intermediate = hidden[:, 0]
        hidden = layers[-1](hidden, None)
        pooled = vision.post_layernorm(hidden[:, 0])
        projected = self.clip.visual_projection(pooled)
        return ReIDImageFeatures(intermediate, pooled, projected, hidden)

    def encode_visible_patches(
        self, pixel_values: torch.Tensor, visible: torch.Tensor, camids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run the vision tower on the CLS token and the patches ``visible`` only (MAE-style).

        ``visible`` (B, K) holds, per image, the raster indices of the K patches to keep. The
        patches are embedded and get their position embedding first, so each kept token knows
        where it is; the others are dropped before the transformer, which then costs about K/N of
        a full forward. Returns every token after the last block and the post-layernorm
        (B, 1 + K, width): the CLS token, then the kept patches in the order of ``visible``.
        """
        vision = self.clip.vision_model
        cls_offset = None
        if camids is not None and self.camera_embedding is not None:
            cls_offset = self.camera_embedding(camids.to(pixel_values.device))
        hidden = vision.embeddings(pixel_values, cls_offset=cls_offset)
        num_patches = hidden.shape[1] - 1
        if visible.ndim != 2 or visible.shape[0] != hidden.shape[0]:
            raise ValueError(
                f"visible must be (batch={hidden.shape[0]}, kept patches), got {tuple(visible.shape)}."
            )
        if visible.numel() and (int(visible.min()) < 0 or int(visible.max()) >= num_patches):
            raise ValueError(f"visible holds patch indices outside [0, {num_patches}).")
        index = (visible.to(hidden.device) + 1).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        hidden = torch.cat([hidden[:, :1], hidden.gather(1, index)], dim=1)
        hidden = vision.pre_layrnorm(hidden)
        for layer in vision.encoder.layers:
            hidden = layer(hidden, None)
        return vision.post_layernorm(hidden)

    def encode_text_embeddings(self, inputs_embeds: torch.Tensor, eot_position: int) -> torch.Tensor:
        """Projected text feature of token embeddings ``inputs_embeds`` (B, L, text width).

        Same computation as ``CLIPModel.get_text_features`` on token ids, but starting from the
        embeddings (so prompt tokens can be learned): position embeddings, causal encoder, final
        layernorm and ``text_projection`` of the output at ``eot_position``. Padding after the
        end-of-text token cannot change that output (causal attention), so templates are run at
        their own length rather than padded to 77.
        """
        text = self.clip.text_model
        hidden = text.embeddings(inputs_embeds=inputs_embeds)
        mask = create_causal_mask(
            config=text.config, inputs_embeds=hidden, attention_mask=None, past_key_values=None
        )
        hidden = text.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True).last_hidden_state
        pooled = text.final_layer_norm(hidden[:, eot_position])
        return self.clip.text_projection(pooled)


__all__ = [
    "CameraEmbedding",
    "ReIDCLIPBackbone",
    "ReIDCLIPVisionEmbeddings",
    "ReIDImageFeatures",
    "end_of_text_position",
    "patch_grid",
    "resize_position_table",
]
