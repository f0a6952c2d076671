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

The two extra rotations per token are tiny beside the decoder (a Hadamard rotation is applied
through its Kronecker factors: for 576 = 12 x 12 x 4, 28 multiply-adds per element, 3.5 KB of
buffers). Nothing about the rotation is stored with quantised weights but the settings
(``rotation``, ``rotation_seed``): ``Q`` is rebuilt from them, exactly (``'hadamard'``: random signs
times a Hadamard matrix, entries ``+-1 / sqrt(D)``) or from a seeded Gaussian (``'orthogonal'``).

Supported: decoders whose layers hold ``input_layernorm`` / ``post_attention_layernorm``
RMSNorms with a multiplicative weight feeding the attention and MLP (Llama / SmolLM2, Mistral,
Qwen2, Qwen3); other families are refused with the reason.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from bevlm.models.llm.architectures import decoder_parts

__all__ = ["ROTATIONS", "hadamard_factors", "hadamard_matrix", "is_rotated", "kron_matmul", "rotate_residual_",
           "rotation_matrix"]

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


#: Largest Sylvester factor of :func:`hadamard_factors` (a power-of-2 order is split into factors <= this).
_MAX_SYLVESTER = 64


def _sylvester(n: int) -> Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def hadamard_factors(n: int) -> list[Tensor] | None:
    """Small Hadamard matrices whose Kronecker product is a Hadamard matrix of order ``n``, or ``None``.

    Sylvester matrices (powers of 2, split into factors of at most 64) and Paley matrices (orders
    ``q + 1`` for primes ``q = 3 mod 4``: 12, 20, 24, 44, 48, 60, ...); e.g. 576 (SmolLM2-135M) =
    12 x 12 x 4, 960 (SmolLM2-360M) = 60 x 16, 896 (Qwen2.5-0.5B) = 224 x 4, 2048 = 64 x 32. Applying
    the factors one axis at a time (:func:`kron_matmul`) costs ``n * sum(orders)`` multiply-adds
    instead of ``n^2`` and keeps a few KB instead of the ``n x n`` matrix.
    """
    if n < 1:
        return None
    if n & (n - 1) == 0:
        factors = []
        while n > 1:
            m = min(n, _MAX_SYLVESTER)
            factors.append(_sylvester(m))
            n //= m
        return factors or [_sylvester(1)]
    for m in _paley_orders(n):
        if m > n:
            break
        if n % m == 0 and m & (m - 1):  # a non-power-of-2 Paley factor
            rest = hadamard_factors(n // m)
            if rest is not None:
                return [_paley(m)] + [f for f in rest if f.shape[0] > 1]
    return None


def hadamard_matrix(n: int) -> Tensor | None:
    """A Hadamard matrix of order ``n`` (entries +-1, ``H H^T = n I``), float64, or ``None``: the
    Kronecker product of :func:`hadamard_factors`."""
    factors = hadamard_factors(n)
    if factors is None:
        return None
    h = factors[0]
    for f in factors[1:]:
        h = torch.kron(h, f)
    return h


def kron_matmul(x: Tensor, factors: list[Tensor], transpose: bool = False) -> Tensor:
    """``x @ kron(F_1, ..., F_k)`` (or ``x @ kron(...)^T``) for ``x`` ``[..., n]``, ``n`` the product
    of the factors' orders, one axis at a time."""
    dims = [int(f.shape[0]) for f in factors]
    lead = x.shape[:-1]
    y = x.reshape(*lead, *dims)
    k = len(dims)
    for i, f in enumerate(factors):
        f = f.to(x.dtype)
        axis = len(lead) + i
        y = torch.movedim(torch.movedim(y, axis, -1) @ (f.T if transpose else f), -1, axis)
    return y.reshape(x.shape)


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
    if kind == "hadamard":
        h = hadamard_matrix(n)
        if h is None:
            raise ValueError(f"rotation='hadamard': no Hadamard matrix of order {n} is built here (orders 2^k "
                             "times Paley orders such as 12, 20, 24, 44, 48, 60); use rotation='orthogonal'")
        return _hadamard_signs(n, seed)[:, None] * h / n ** 0.5
    gen = torch.Generator().manual_seed(int(seed))
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r))[None, :]


def _hadamard_signs(n: int, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, 2, (n,), generator=gen).to(torch.float64) * 2 - 1


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
def rotate_residual_(module: nn.Module, kind: str = "hadamard", seed: int = 0, mlp: bool = False) -> Tensor:
    """Rotate the residual stream of a float decoder in place; the model's outputs stay the same.

    Args:
        module: an ``HFCausalLM`` (LoRA merged: plain ``nn.Linear`` layers) or its ``*ForCausalLM``.
        kind, seed: see :func:`rotation_matrix`.
        mlp: also rotate each MLP's inner width (QuaRot's online Hadamard before ``down_proj``):
            ``down_proj`` becomes a :class:`RotatedInput` holding the Linear (same name, one level
            down: ``mlp.down_proj.down_proj``) with ``W <- W Q_mlp`` and its input multiplied by
            ``Q_mlp`` on the fly (a Hadamard of the intermediate size, applied through its factors).

    Returns:
        ``Q`` (float64, ``[D, D]``); decoder layer 0 and the final norm keep it (in the model dtype)
        as shared non-persistent buffers read by their pre-hooks: ``bevlm_rotation`` (orthogonal) or
        ``bevlm_rotation_signs`` + ``bevlm_rotation_f0, f1, ...`` (Hadamard: signs and Kronecker
        factors, a few KB).

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

    inner = None
    if mlp:
        width_mlp = int(lm.config.intermediate_size)
        inner = hadamard_factors(width_mlp)
        if inner is None:
            raise ValueError(f"rotate_residual_(mlp=True): no Hadamard matrix of order {width_mlp} (the MLP width) "
                             "is built here; use mlp=False")
        dtype_mlp = parts.layers[0].mlp.down_proj.weight.dtype  # one set of buffers shared by every layer
        inner_signs = (_hadamard_signs(width_mlp, seed + 1) / width_mlp ** 0.5).to(dtype_mlp)
        inner = [f.to(dtype_mlp) for f in inner]
        q_mlp = rotation_matrix(width_mlp, "hadamard", seed + 1)
    for layer in parts.layers:
        attn, mlp_module = layer.self_attn, layer.mlp
        if inner is not None:
            down = mlp_module.down_proj
            down.weight.data = (down.weight.double() @ q_mlp).to(down.weight.dtype)
            mlp_module.down_proj = RotatedInput(down, inner_signs, inner)
    for layer in parts.layers:
        attn, mlp = layer.self_attn, layer.mlp
        for norm, owner, readers in ((layer.input_layernorm, attn, _ATTN_READERS),
                                     (layer.post_attention_layernorm, mlp, _MLP_READERS)):
            gain = norm.weight.detach().clone()
            for name in readers:
                read(getattr(owner, name), gain)
            norm.weight.data.fill_(1.0)
        write(attn.o_proj)
        write(mlp.down_proj.down_proj if isinstance(mlp.down_proj, RotatedInput) else mlp.down_proj)

    # Q rides on the two hooked modules as shared non-persistent buffers (not in the state dict; a deep
    # copy keeps the sharing and its hooks read the copy's own): a Hadamard rotation as its signs and
    # Kronecker factors (576: 1.6 KB), an orthogonal one as the dense matrix
    dtype = parts.layers[0].input_layernorm.weight.dtype
    if kind == "hadamard":
        buffers = {f"{_BUFFER}_signs": (_hadamard_signs(width, seed) / width ** 0.5).to(dtype)}
        buffers.update({f"{_BUFFER}_f{i}": f.to(dtype) for i, f in enumerate(hadamard_factors(width))})
    else:
        buffers = {_BUFFER: q.to(dtype)}
    for owner in (parts.layers[0], parts.final_norm):
        for name, tensor in buffers.items():
            owner.register_buffer(name, tensor, persistent=False)
    parts.layers[0].register_forward_pre_hook(_rotate_in, with_kwargs=True)
    parts.final_norm.register_forward_pre_hook(_rotate_out)
    setattr(decoder, _HOOK_ATTR, {"kind": kind, "seed": int(seed), "mlp": bool(mlp)})
    return q


class RotatedInput(nn.Module):
    """A Linear whose input is first rotated by ``diag(signs) H`` (``H`` the Kronecker product of
    ``factors``; ``signs`` already divided by ``sqrt(n)``): ``down_proj(x Q)``. The Linear keeps its
    name one level down, so quantisation selects and groups it as before."""

    def __init__(self, linear: nn.Module, signs: Tensor, factors: list[Tensor]) -> None:
        super().__init__()
        self.down_proj = linear
        dtype = signs.dtype if not isinstance(getattr(linear, "weight", None), Tensor) else linear.weight.dtype
        self.register_buffer(f"{_BUFFER}_signs", signs.to(dtype), persistent=False)
        for i, f in enumerate(factors):
            self.register_buffer(f"{_BUFFER}_f{i}", f.to(dtype), persistent=False)

    @property
    def in_features(self) -> int:
        return self.down_proj.in_features

    @property
    def out_features(self) -> int:
        return self.down_proj.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(_apply(self, x, inverse=False))


def _apply(owner: nn.Module, h: Tensor, inverse: bool) -> Tensor:
    """``h Q`` (or ``h Q^T``) with the rotation buffers of ``owner``."""
    dense = getattr(owner, _BUFFER, None)
    if dense is not None:
        dense = dense.to(h.dtype)
        return h @ (dense.T if inverse else dense)
    signs = getattr(owner, f"{_BUFFER}_signs").to(h.dtype)  # already divided by sqrt(n)
    factors = [getattr(owner, f"{_BUFFER}_f{i}") for i in range(len(owner._buffers))
               if f"{_BUFFER}_f{i}" in owner._buffers]
    if inverse:  # h Q^T = (h H^T) * s
        return kron_matmul(h, factors, transpose=True) * signs
    return kron_matmul(h * signs, factors)  # h Q = (h * s) H


def _rotate_in(layer: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook of decoder layer 0: the residual stream enters rotated (``h Q``)."""
    if args:
        return (_apply(layer, args[0], inverse=False),) + tuple(args[1:]), kwargs
    return args, dict(kwargs, hidden_states=_apply(layer, kwargs["hidden_states"], inverse=False))


def _rotate_out(norm: nn.Module, args: tuple):
    """Forward pre-hook of the final norm: the stream leaves rotated back (``h Q^T``)."""
    return (_apply(norm, args[0], inverse=True),) + tuple(args[1:])
