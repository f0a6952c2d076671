"""Image backbone from timm (the only module that imports timm).

``timm.create_model(..., features_only=True, pretrained=False)`` builds any timm
architecture as a multi-scale feature extractor. Weights are never
downloaded: they come from a local file (safetensors or a torch checkpoint)
or from a copy already present in the Hugging Face cache.
"""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Iterator, Sequence

import timm
import torch
from mmengine.logging import print_log
from timm.models import FeatureDictNet
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from bevlm.registry import MODELS

HF_CACHE_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@contextmanager
def no_running_stat_updates(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers of ``module`` leave the context with the running statistics (and
    ``num_batches_tracked``) they entered it with; inside it they compute exactly as usual.

    Used as the recomputation context of gradient checkpointing: the recompute in backward gives
    the forward's outputs and saves the same tensors, and the running statistics keep the single
    momentum update of the forward instead of receiving a second one. The buffers are restored
    through ``.data`` (batch norm saves them for its backward; a tracked in-place write would
    invalidate that).
    """
    saved = [(buf, buf.detach().clone())
             for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
             for buf in (m.running_mean, m.running_var, m.num_batches_tracked) if buf is not None]
    try:
        yield
    finally:
        for buf, value in saved:
            buf.data.copy_(value)


def _checkpoint_contexts(module: nn.Module):
    """``context_fn`` of :func:`torch.utils.checkpoint.checkpoint`: plain forward, recompute
    without running-statistic updates."""
    return nullcontext(), no_running_stat_updates(module)


def load_local_state_dict(path: str) -> dict[str, Tensor]:
    """Read a state dict from a ``.safetensors`` file or a torch checkpoint.

    Torch checkpoints are read with ``weights_only=True`` (tensors only; no
    pickled code). ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers and
    ``module.`` / ``backbone.`` key prefixes are removed.

    Args:
        path: local file path.

    Returns:
        flat dict name -> tensor.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"TimmBackbone: pretrained weights file '{path}' does not exist; "
                                "fix `backbone.pretrained` (a local .safetensors/.pth path, "
                                "'hf-cache', or None).")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        state = load_file(path, device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def find_hf_cache_weights(model_name: str) -> str:
    """Path of timm's weights for ``model_name`` in the local Hugging Face cache.

    Only looks at the cache (``HF_HUB_CACHE`` / ``HF_HOME``); never contacts
    the hub, so it behaves as with ``HF_HUB_OFFLINE=1``.

    Raises:
        FileNotFoundError: when the weights are not cached.
    """
    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    repo_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo_id:
        raise FileNotFoundError(f"TimmBackbone: timm has no Hugging Face weights for '{model_name}'; "
                                "set `backbone.pretrained` to a local weights file or None.")
    cache_dir = os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME")
        else constants.HF_HUB_CACHE)
    for filename in HF_CACHE_WEIGHT_FILES:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    raise FileNotFoundError(
        f"TimmBackbone: pretrained='hf-cache' but '{repo_id}' is not in the Hugging Face cache "
        f"'{cache_dir}' (nothing is downloaded). Copy the weights there, set "
        "`backbone.pretrained` to a local .safetensors/.pth file, or use pretrained=None.")


@MODELS.register_module()
class TimmBackbone(nn.Module):
    """Multi-scale image features from a timm model (``features_only``).

    Args:
        model_name: timm architecture (optionally with a tag, 'resnet18.a1_in1k').
        pretrained: None (random init), a local weights file (.safetensors or
            .pth/.pt/.bin), or 'hf-cache' (timm's weights if already in the
            local Hugging Face cache; error otherwise).
        out_indices: timm feature indices to return (resnet: 0 = stem
            stride 2, 1..4 = layer1..4 at strides 4..32).
        frozen_stages: freeze every module up to and including feature
            index ``frozen_stages`` (-1: none; resnet 0 = stem, 1 = +layer1).
        norm_eval: keep BatchNorm layers in eval mode during training.
        gradient_checkpointing: in training mode with gradients enabled, run every module of the
            feature extractor that has parameters (resnet: conv1, bn1, layer1..layer4) under
            ``torch.utils.checkpoint`` (``use_reentrant=False``): its activations are recomputed
            in backward instead of stored. Loss and gradients are those of the plain forward.
            The recompute puts back the BatchNorm running statistics it moved
            (:func:`no_running_stat_updates`), so they get one momentum update per step, as
            without checkpointing. Needs a timm feature extractor built as ``FeatureListNet`` (resnet,
            convnext, regnet, ...); other wrappers are refused.
    """

    def __init__(self, model_name: str = "resnet18", pretrained: str | None = None,
                 out_indices: Sequence[int] = (2, 3, 4), frozen_stages: int = -1,
                 norm_eval: bool = False, gradient_checkpointing: bool = False) -> None:
        super().__init__()
        self.model_name = model_name
        self.model = timm.create_model(model_name, features_only=True, pretrained=False,
                                       out_indices=tuple(out_indices))
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        if gradient_checkpointing and not isinstance(self.model, FeatureDictNet):
            raise ValueError(f"TimmBackbone: gradient_checkpointing needs a timm feature extractor built as "
                             f"FeatureListNet (resnet, convnext, regnet, ...); '{model_name}' gives "
                             f"{type(self.model).__name__}. Set `img_backbone.gradient_checkpointing=False`.")
        self.gradient_checkpointing = bool(gradient_checkpointing)
        if pretrained is not None:
            path = find_hf_cache_weights(model_name) if pretrained == "hf-cache" else pretrained
            self.load_weights(path)
        self._freeze_stages()

    @property
    def out_channels(self) -> list[int]:
        """Channels of each returned feature map."""
        return list(self.model.feature_info.channels())

    @property
    def strides(self) -> list[int]:
        """Stride (reduction) of each returned feature map."""
        return list(self.model.feature_info.reduction())

    def load_weights(self, path: str) -> None:
        """Load a local checkpoint of the full timm model or of this backbone.

        Keys of the full model (``stages.0.x``) are matched to the flattened
        feature-extractor names (``stages_0.x``); extra keys (classifier) are
        ignored; a missing backbone key is an error.
        """
        state = load_local_state_dict(path)
        mapped = {}
        for key in self.model.state_dict():
            head, _, rest = key.partition(".")
            candidates = (key, head.replace("_", ".") + "." + rest if rest else key)
            for cand in candidates:
                if cand in state:
                    mapped[key] = state[cand]
                    break
        missing = [k for k in self.model.state_dict() if k not in mapped]
        if missing:
            raise KeyError(f"TimmBackbone: '{path}' lacks {len(missing)} weights of "
                           f"'{self.model_name}' (e.g. {missing[:3]}); is it a checkpoint of this "
                           "architecture? Fix `backbone.pretrained` or `backbone.model_name`.")
        self.model.load_state_dict(mapped, strict=True)
        print_log(f"TimmBackbone: loaded {len(mapped)} tensors from {path} "
                  f"({len(state) - len(mapped)} unused).", logger="current")

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        info = self.model.feature_info.info
        if self.frozen_stages >= len(info):
            raise ValueError(f"TimmBackbone: frozen_stages={self.frozen_stages} but '{self.model_name}' "
                             f"has {len(info)} feature stages; fix `backbone.frozen_stages`.")
        last = info[self.frozen_stages]["module"].replace(".", "_")
        for name, module in self.model.named_children():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False
            if name == last:
                break

    def train(self, mode: bool = True) -> "TimmBackbone":
        """Switch mode, keeping frozen stages (and BatchNorm with norm_eval) in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        """Args: x ``[B, 3, H, W]``. Returns: list of ``[B, C_i, H / s_i, W / s_i]``."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return self._forward_checkpointed(x)
        return list(self.model(x))

    def _forward_checkpointed(self, x: Tensor) -> list[Tensor]:
        """``FeatureListNet``'s forward with every module that has parameters checkpointed."""
        out = []
        for name, module in self.model.items():
            if any(True for _ in module.parameters()):
                x = checkpoint(module, x, use_reentrant=False, context_fn=partial(_checkpoint_contexts, module))
            else:  # parameter-free (activation, pooling): nothing worth recomputing
                x = module(x)
            if name in self.model.return_layers:
                if isinstance(x, (tuple, list)):  # as FeatureDictNet: concatenate or take the first
                    out.append(torch.cat(x, 1) if self.model.concat else x[0])
                else:
                    out.append(x)
        return out
