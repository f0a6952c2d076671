"""The one place that knows what transformers calls the KV cache.

transformers 5.x renamed the ``past_key_values`` keyword of model / decoder-layer forwards to
``cache`` (the old name still works but warns ``FutureWarning`` until it is removed in 5.40), and
the output dataclasses' ``past_key_values`` field to ``cache``. Every decoding path passes its cache
with :func:`cache_kwargs` and reads it back with :func:`output_cache`, so both the renamed API and
older 5.x versions that only know ``past_key_values`` are served without warnings. Some decoder
layers have their own name (GPT-NeoX's ``GPTNeoXLayer.forward(layer_past=...)``); a keyword a
forward does not declare would vanish into its ``**kwargs`` and the layer would run uncached, so
every name is read from the signature.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any

from torch import nn

NEW_NAME = "cache"
OLD_NAME = "past_key_values"
#: Cache keywords of single decoder layers that use neither name (GPT-NeoX).
LAYER_NAMES = ("layer_past",)


@functools.lru_cache(maxsize=None)
def _library_name() -> str:
    """The installed transformers' name, from its output dataclasses (decided once)."""
    from transformers.modeling_outputs import BaseModelOutputWithPast  # heavy; only this module needs it

    return NEW_NAME if NEW_NAME in BaseModelOutputWithPast.__dataclass_fields__ else OLD_NAME


@functools.lru_cache(maxsize=None)
def _forward_name(module_type: type) -> str:
    """The cache keyword of ``module_type.forward`` (decided once per class)."""
    try:
        params = inspect.signature(module_type.forward).parameters  # follows the decorators' __wrapped__
    except (TypeError, ValueError):
        params = {}
    for name in (NEW_NAME, OLD_NAME) + LAYER_NAMES:
        if name in params:
            return name
    return _library_name()  # an opaque ``**kwargs`` forward (a wrapper): the library's name


def cache_kwarg(module: nn.Module) -> str:
    """Name of the KV-cache keyword that ``module``'s forward accepts.

    Args:
        module: a ``*ForCausalLM``, its decoder (``get_decoder()``) or one decoder layer.

    Returns:
        ``'cache'`` (transformers with the renamed API) or ``'past_key_values'`` (older 5.x);
        ``'layer_past'`` for a GPT-NeoX decoder layer.
    """
    return _forward_name(type(module))


def cache_kwargs(module: nn.Module, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` to splat into ``module(...)``: ``module(input_ids=..., **cache_kwargs(module, past))``."""
    return {cache_kwarg(module): cache}


def output_cache(output: Any) -> Any:
    """The KV cache of a model output (``output.cache``, or ``output.past_key_values`` on older 5.x)."""
    fields = getattr(type(output), "__dataclass_fields__", None)
    if fields is not None and NEW_NAME in fields:
        return output.cache
    return output.past_key_values
