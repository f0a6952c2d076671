"""Rotate the residual stream of a Llama-family decoder before quantising it (incoherence processing).

A decoder's residual stream carries a few outlier channels (SmolLM2's does); every Linear that
reads it (``q/k/v_proj``, ``gate/up_proj``) then has a few input columns whose weight errors are
multiplied by very large activations, and every Linear that writes it (``o_proj``, ``down_proj``)
has output rows of very different size. Multiplying the stream by an orthogonal matrix ``Q``
spreads those channels over all of them (QuaRot, Ashkboos et al. 2024, arXiv 2404.00456; QuIP#,
Tseng et al. 2024), and the model computes exactly the same function when

* each RMSNorm's weight ``g`` is folded into the Linears that read its output
  (``W <- W diag(g)``) and the norm keeps unit weight (RMSNorm commutes with ``Q``:
  ``rms(x Q) = rms(x)``);
* every reader takes the rotated stream: ``W <- W Q`` (row vectors, ``y = x W^T``);
* every writer emits rotated outputs: ``W <- Q^T W`` (and a bias ``b <- b Q``);
* the stream is rotated once where it starts (a forward pre-hook on decoder layer 0:
  ``h <- h Q``; token embeddings, visual and trajectory embeddings all enter there) and rotated
  back where it ends (a pre-hook on the final norm: ``h <- h Q^T``), so the embedding table,
  a tied LM head and every hidden state read after the final norm are unchanged.

The two extra ``D x D`` products per token are tiny beside the decoder. Nothing about the
rotation is stored with quantised weights but the settings (``rotation``, ``rotation_seed``):
``Q`` is rebuilt from them, exactly (``'hadamard'``: signs times a Hadamard matrix, entries
``+-1 / sqrt(D)``) or from a seeded Gaussian (``'orthogonal'``).

Supported: decoders whose layers hold ``input_layernorm`` / ``post_attention_layernorm``
RMSNorms with a multiplicative weight feeding the attention and MLP (Llama / SmolLM2, Mistral,
Qwen2, Qwen3); other families are refused with the reason.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from bevlm.models.llm.architectures import decoder_parts

__all__ = ["ROTATIONS", "hadamard_matrix", "rotation_matrix", "rotate_residual_", "is_rotated"]

#: Rotation kinds: ``'hadamard'`` (random signs x a Hadamard matrix; exact, the QuaRot choice) and
#: ``'orthogonal'`` (QR of a seeded Gaussian matrix; any width).
ROTATIONS = ("hadamard", "orthogonal")
#: Model families whose layers this module can rotate (pre-norm RMSNorm with weight ``g * x / rms``).
SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3")
_ATTN_READERS = ("q_proj", "k_proj", "v_proj")
_MLP_READERS = ("gate_proj", "up_proj")
_WRITERS = (("self_attn", "o_proj"), ("mlp", "down_proj"))
_HOOK_ATTR = "_bevlm_rotation"
_BUFFER = "bevlm_rotation"


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def _paley(order: int) -> Tensor:
    """Paley construction I: a Hadamard matrix of ``order = q + 1``, q prime, q = 3 (mod 4)."""
    q = order - 1
    residues = {(i * i) % q for i in range(1, q)}
    chi = torch.tensor([0] + [1 if i in residues else -1 for i in range(1, q)], dtype=torch.float64)
    idx = torch.arange(q)
    jacobsthal = chi[(idx[None, :] - idx[:, None]) % q]  # Q[i, j] = chi(j - i)
    s = torch.zeros(order, order, dtype=torch.float64)
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = jacobsthal
    return s + torch.eye(order, dtype=torch.float64)


def _paley_orders(limit: int) -> list[int]:
    return [q + 1 for q in range(3, limit) if q % 4 == 3 and _is_prime(q)]


def hadamard_matrix(n: int) -> Tensor | None:
    """A Hadamard matrix of order ``n`` (entries +-1, ``H H^T = n I``), float64, or ``None``.

    Built as Kronecker products of Sylvester matrices (powers of 2) and Paley matrices (orders
    ``q + 1`` for primes ``q = 3 mod 4``: 4, 8, 12, 20, 24, 32, 44, 48, 60, ...); e.g. 576 (SmolLM2-135M)
    = 12 x 48, 960 (SmolLM2-360M) = 60 x 16, 2048 = 2^11. Orders outside these products give ``None``.
    """
    if n < 1:
        return None
    if n & (n - 1) == 0:  # Sylvester
        h = torch.ones(1, 1, dtype=torch.float64)
        while h.shape[0] < n:
            h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
        return h
    for m in _paley_orders(n):
        if m > n:
            break
        if n % m == 0 and m & (m - 1):  # a non-power-of-2 Paley factor
            rest = hadamard_matrix(n // m)
            if rest is not None:
                return torch.kron(_paley(m), rest)
    return None


def rotation_matrix(n: int, kind: str = "hadamard", seed: int = 0) -> Tensor:
    """The ``n x n`` orthogonal matrix ``Q`` of a rotation (float64; the same on every machine for
    ``'hadamard'``, up to LAPACK rounding for ``'orthogonal'``).

    Args:
        n: the residual width (``hidden_size``).
        kind: ``'hadamard'`` (``diag(random signs) H / sqrt(n)``) or ``'orthogonal'`` (QR of a
            seeded Gaussian matrix, signs fixed so that the factorisation is unique).
        seed: seed of the signs / the Gaussian matrix.

    Raises:
        ValueError: an unknown ``kind``, or no Hadamard construction for ``n``.
    """
    if kind not in ROTATIONS:
        raise ValueError(f"rotation={kind!r} is not one of {ROTATIONS}")
    gen = torch.Generator().manual_seed(int(seed))
    if kind == "hadamard":
        h = hadamard_matrix(n)
        if h is None:
            raise ValueError(f"rotation='hadamard': no Hadamard matrix of order {n} is built here (orders 2^k "
                             "times Paley orders such as 12, 20, 24, 44, 48, 60); use rotation='orthogonal'")
        signs = torch.randint(0, 2, (n,), generator=gen).to(torch.float64) * 2 - 1
        return signs[:, None] * h / n ** 0.5
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r))[None, :]


def _causal_lm(module: nn.Module) -> nn.Module:
    """The ``*ForCausalLM`` inside ``module`` (an ``HFCausalLM`` wrapper keeps it as ``.lm``)."""
    lm = getattr(module, "lm", module)
    if not hasattr(lm, "get_decoder"):
        raise ValueError(f"rotate_residual_: {type(module).__name__} is not a causal LM (no get_decoder)")
    return lm


def is_rotated(module: nn.Module) -> bool:
    """Whether :func:`rotate_residual_` was applied to ``module`` (its decoder carries the hooks)."""
    try:
        return bool(getattr(decoder_parts(_causal_lm(module)).decoder, _HOOK_ATTR, None))
    except ValueError:
        return False


def _check_supported(lm: nn.Module) -> None:
    model_type = str(getattr(lm.config, "model_type", ""))
    if model_type not in SUPPORTED_TYPES:
        raise ValueError(f"rotate_residual_: model_type {model_type!r} is not supported (rotation folds pre-norm "
                         f"RMSNorm weights into the Linears: {SUPPORTED_TYPES}); quantise without rotation")
    for i, layer in enumerate(decoder_parts(lm).layers):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            if not isinstance(getattr(getattr(layer, norm, None), "weight", None), torch.Tensor):
                raise ValueError(f"rotate_residual_: layer {i} has no {norm}.weight")
        for part, names in (("self_attn", _ATTN_READERS + ("o_proj",)), ("mlp", _MLP_READERS + ("down_proj",))):
            for n in names:
                if not isinstance(getattr(getattr(layer, part, None), n, None), nn.Linear):
                    raise ValueError(f"rotate_residual_: layer {i}.{part}.{n} is not an nn.Linear (merge LoRA "
                                     "adapters and rotate before quantising)")


@torch.no_grad()
def rotate_residual_(module: nn.Module, kind: str = "hadamard", seed: int = 0) -> Tensor:
    """Rotate the residual stream of a float decoder in place; the model's outputs stay the same.

    Args:
        module: an ``HFCausalLM`` (LoRA merged: plain ``nn.Linear`` layers) or its ``*ForCausalLM``.
        kind, seed: see :func:`rotation_matrix`.

    Returns:
        ``Q`` (float64, ``[D, D]``); decoder layer 0 and the final norm keep it (in the model dtype)
        as the shared non-persistent buffer ``bevlm_rotation`` read by their pre-hooks.

    Raises:
        ValueError: an unsupported family, Linears that are not plain (LoRA not merged, already
            quantised), or a model rotated already.
    """
    lm = _causal_lm(module)
    _check_supported(lm)
    parts = decoder_parts(lm)
    decoder = parts.decoder
    if getattr(decoder, _HOOK_ATTR, None):
        raise ValueError("rotate_residual_: the model is rotated already")
    width = int(lm.config.hidden_size)
    q = rotation_matrix(width, kind, seed)

    def read(linear: nn.Linear, gain: Tensor) -> None:  # W <- W diag(g) Q
        w = linear.weight
        linear.weight.data = ((w.double() * gain.double()[None, :]) @ q).to(w.dtype)

    def write(linear: nn.Linear) -> None:  # W <- Q^T W, b <- b Q
        w = linear.weight
        linear.weight.data = (q.T @ w.double()).to(w.dtype)
        if linear.bias is not None:
            linear.bias.data = (linear.bias.double() @ q).to(linear.bias.dtype)

    for layer in parts.layers:
        attn, mlp = layer.self_attn, layer.mlp
        for norm, owner, readers in ((layer.input_layernorm, attn, _ATTN_READERS),
                                     (layer.post_attention_layernorm, mlp, _MLP_READERS)):
            gain = norm.weight.detach().clone()
            for name in readers:
                read(getattr(owner, name), gain)
            norm.weight.data.fill_(1.0)
        write(attn.o_proj)
        write(mlp.down_proj)

    # Q rides on the two hooked modules as one shared non-persistent buffer (not in the state dict; a
    # deep copy of the model keeps the sharing and its hooks read the copy's own buffer)
    rot = q.to(parts.layers[0].input_layernorm.weight.dtype)
    parts.layers[0].register_buffer(_BUFFER, rot, persistent=False)
    parts.final_norm.register_buffer(_BUFFER, rot, persistent=False)
    parts.layers[0].register_forward_pre_hook(_rotate_in, with_kwargs=True)
    parts.final_norm.register_forward_pre_hook(_rotate_out)
    setattr(decoder, _HOOK_ATTR, {"kind": kind, "seed": int(seed)})
    return q


def _rotate_in(layer: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook of decoder layer 0: the residual stream enters rotated (``h Q``)."""
    if args:
        h = args[0]
        return (h @ getattr(layer, _BUFFER).to(h.dtype),) + tuple(args[1:]), kwargs
    h = kwargs["hidden_states"]
    return args, dict(kwargs, hidden_states=h @ getattr(layer, _BUFFER).to(h.dtype))


def _rotate_out(norm: nn.Module, args: tuple):
    """Forward pre-hook of the final norm: the stream leaves rotated back (``h Q^T``)."""
    h = args[0]
    return (h @ getattr(norm, _BUFFER).to(h.dtype).T,) + tuple(args[1:])
