"""One pruning setting of a BEVVLM and the functions that apply it (encoder phase, prefill)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bevlm.models.llm import HFCausalLM, PrefixCache

from .bev_keep import bev_keep_for_model
from .fastv import fastv_prefill
from .selection import select_tokens


@dataclass(frozen=True)
class PruningSetting:
    """Which reductions of encoder and prefill cost are on.

    Args:
        encoder_layers: BEV encoder layers run (early exit); None = all.
        bev_keep_ratio: fraction of projector tokens kept by aux-head occupancy (1.0 = off).
        fastv_keep_ratio: fraction of visual tokens kept by FastV in the prefill (1.0 = off).
        fastv_layer: FastV's K (1-based decoder layer whose attention ranks the tokens).
    """

    encoder_layers: int | None = None
    bev_keep_ratio: float = 1.0
    fastv_keep_ratio: float = 1.0
    fastv_layer: int = 2

    def __post_init__(self) -> None:
        for name in ("bev_keep_ratio", "fastv_keep_ratio"):
            value = getattr(self, name)
            if not 0.0 < float(value) <= 1.0:
                raise ValueError(f"PruningSetting: {name}={value} must be in (0, 1]; 1.0 disables it")
        if self.encoder_layers is not None and int(self.encoder_layers) < 1:
            raise ValueError(f"PruningSetting: encoder_layers={self.encoder_layers} must be >= 1 or None")
        if int(self.fastv_layer) < 1:
            raise ValueError(f"PruningSetting: fastv_layer={self.fastv_layer} must be >= 1")


def prune_visual_tokens(model: nn.Module, vis: Tensor, bev: Tensor | None, setting: PruningSetting) -> Tensor:
    """BEV-side pruning of a BEVVLM's visual tokens (identity when ``bev_keep_ratio == 1``).

    Args:
        model: :class:`bevlm.models.detectors.BEVVLM` (``aux_head``, ``projector``).
        vis: ``[B, N, D]`` projector output.
        bev: ``[B, Hb*Wb, C]`` the BEV the tokens came from (None for non-BEV vision).
        setting: the pruning setting.

    Returns:
        ``[B, n_keep, D]`` kept tokens in their original order.
    """
    if setting.bev_keep_ratio >= 1.0:
        return vis
    if bev is None:
        raise ValueError("PruningSetting.bev_keep_ratio < 1 needs vision='bev' (the occupancy map)")
    keep = bev_keep_for_model(model.aux_head, model.projector, bev, setting.bev_keep_ratio)  # [B, n_keep]
    return select_tokens(vis, keep)


@torch.no_grad()
def frame_prefix(model: nn.Module, imgs: Tensor, data_samples: list,
                 setting: PruningSetting) -> tuple[Tensor, tuple[int, int]]:
    """Encoder phase of a BEVVLM under ``setting``, for the last frame of ``imgs`` without history.

    (Temporal self-attention costs the same with or without a previous BEV, so the FLOPs equal
    those of streaming inference.)

    Args:
        model: :class:`bevlm.models.detectors.BEVVLM`.
        imgs: ``[B, T, N, 3, H, W]`` (only ``imgs[:, -1]`` is used for vision='bev').
        data_samples: the batch's :class:`DriveDataSample` list (``ego2img``, ``img_shape``,
            ``ego_status``).
        setting: the pruning setting.

    Returns:
        ``(prefix [B, P, D], visual_slice)``, ``visual_slice = (0, N_kept)`` (``(0, 0)``
        for the blind model).
    """
    if model.vision == "bev":
        ego2img = torch.stack([s.ego2img for s in data_samples]).to(imgs)[:, -1]  # [B, N, 4, 4]
        feats = model.extract_img_feats(imgs[:, -1])
        bev = model.bev_encoder(feats, ego2img, tuple(data_samples[0].img_shape), prev_bev=None,
                                ego_motion=None, num_layers=setting.encoder_layers)  # [B, Hb*Wb, C]
        vis = prune_visual_tokens(model, model.projector(bev), bev, setting)
    else:
        if setting.encoder_layers is not None or setting.bev_keep_ratio < 1.0:
            raise ValueError(f"PruningSetting: encoder_layers / bev_keep_ratio need vision='bev', the model "
                             f"has vision={model.vision!r}")
        vis, bev = model.visual_tokens(imgs, data_samples)
    n_vis = 0 if vis is None else vis.shape[1]
    return model.build_prefix(vis, data_samples, bev), (0, n_vis)


@torch.no_grad()
def prefill_with_setting(llm: HFCausalLM, prefix_embeds: Tensor, visual_slice: tuple[int, int],
                         setting: PruningSetting) -> PrefixCache:
    """Prefill one frame's prefix, with FastV when ``fastv_keep_ratio < 1``.

    Args:
        llm: the LLM wrapper.
        prefix_embeds: ``[1, P, D]``.
        visual_slice: ``(start, end)`` of the visual tokens in the prefix.
        setting: the pruning setting.

    Returns:
        a :class:`PrefixCache` (a :class:`PrunedPrefixCache` under FastV).
    """
    if setting.fastv_keep_ratio >= 1.0 or visual_slice[1] <= visual_slice[0]:
        return llm.prefill(prefix_embeds)
    return fastv_prefill(llm, prefix_embeds, visual_slice, setting.fastv_keep_ratio, setting.fastv_layer)
