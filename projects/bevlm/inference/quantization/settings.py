"""Typed, validated quantisation settings: one frozen dataclass per method.

The same settings object travels unchanged through every layer of the quantisation code: the
test-time hook (``PostTrainingQuantHook(quant=...)``), the model-level
:func:`bevlm.inference.ptq.quantize_bevvlm`, the layer-level
:func:`bevlm.inference.quantization.quantize_model`, and the metadata of
:func:`bevlm.inference.quantization.save_quantized` (read back by
:func:`bevlm.inference.quantization.read_quant_settings`). Configs write it as a plain dict (a
benchmark variant's ``quant`` switch); :func:`quant_settings` turns the dict into the settings
class of its ``method``::

    quant_settings(dict(method="rtn", group_size=32, zero_point="offset", keep_lora=True))
    # -> RTNSettings(group_size=32, zero_point='offset', keep_lora=True, ...)

Every option has one name everywhere (``keep_lora``, ``damping``, ``group_sizes``,
``embed_group_size``, ...); values are checked when the object is built, so a typo fails before
a model is loaded or a calibration run starts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from .allocation import group_bits
from .int4 import ZERO_POINTS
from .quant_linear import KERNELS
from .rotation import ROTATIONS

METHODS = ("rtn", "gptq", "int8_dynamic")
#: The Linears of a Llama decoder layer (attention and MLP projections): what ``include=None`` (the
#: default) selects on a Llama / SmolLM2 model and on a model of an unknown family. Other families get
#: their own names (``bevlm.models.llm.architectures.linear_names``).
DEFAULT_INCLUDE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: How GPTQ's layer inputs are produced from the calibration frames (see :class:`GPTQSettings`).
CALIB_MODES = ("teacher_forced", "greedy")
#: How ``group_budget`` scores each Linear's quantisation error (see :class:`GPTQSettings`).
SENSITIVITIES = ("output", "fisher")
#: Storage of the embedding table (and the tied LM head): off, int4 codes, int8 codes.
EMBEDDINGS = (False, "int4", "int8")
#: dtypes LoRA adapters kept beside an int4 base may take (``None``: as trained).
LORA_DTYPES = (None, "bfloat16", "float16", "float32")
#: Former option names and the name that replaced them (named in the unknown-key error).
RENAMED = {"lora_base": "keep_lora", "percdamp": "damping"}


def _fail(method: str, message: str) -> None:
    raise ValueError(f"quant settings (method={method!r}): {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _names(method: str, key: str, value: Any, allow_empty: bool) -> tuple[str, ...]:
    """``value`` (a list / tuple of layer-name parts) as a tuple, checked."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        _fail(method, f"{key}={value!r} must be a list or tuple of layer-name parts, e.g. "
                      f"{key}=('q_proj', 'v_proj') (a single name still needs the tuple: ('q_proj',))")
    value = tuple(value)
    if not value and not allow_empty:
        _fail(method, f"{key}=() selects no layer; name at least one, e.g. {key}={DEFAULT_INCLUDE}")
    bad = [v for v in value if not isinstance(v, str) or not v or "." in v]
    if bad:
        _fail(method, f"{key} entries {bad} are not single name parts; use the last part of a layer's "
                      "dotted name, e.g. 'q_proj' (not 'self_attn.q_proj')")
    return value


def _check_lora(method: str, keep_lora: Any, lora_dtype: Any) -> None:
    if not isinstance(keep_lora, bool):
        _fail(method, f"keep_lora={keep_lora!r} must be True or False")
    if lora_dtype not in LORA_DTYPES:
        _fail(method, f"lora_dtype={lora_dtype!r} is not one of {LORA_DTYPES}")


@dataclass(frozen=True)
class RTNSettings:
    """int4 round-to-nearest, group-wise, packed storage (:class:`QuantLinear4`).

    Attributes:
        bits: weight bits; the packed storage is 4-bit, so 4 (use ``int8_dynamic`` for 8 bit).
        group_size: input columns per scale / zero group; must divide every quantised layer's
            input width (SmolLM2's 576: 32, 64 or 192).
        group_sizes: per-layer-kind group sizes, ``{name part: size}`` (e.g. ``{'gate_proj': 64}``:
            mixed precision by layer kind); a Linear whose dotted name has one of the parts takes
            its size (the first match), the others ``group_size``. Stored as a tuple of
            ``(part, size)`` pairs (hashable); :meth:`to_dict` gives the dict back.
        include: last name parts of the Linears to quantise; ``None`` (default): every decoder-layer
            Linear of the model's architecture (``bevlm.models.llm.architectures.linear_names`` of
            its ``config.model_type``: Llama ``q/k/v/o_proj`` + ``gate/up/down_proj``, Phi-3
            ``qkv_proj`` / ``o_proj`` / ``gate_up_proj`` / ``down_proj``, Phi-2 ``q/k/v_proj`` /
            ``dense`` / ``fc1`` / ``fc2``, GPT-NeoX ``query_key_value`` / ``dense`` /
            ``dense_h_to_4h`` / ``dense_4h_to_h``, ...; the Llama names for an unknown family),
            resolved by :func:`~bevlm.inference.quantization.quantize_model`. The LM head is not
            among them.
        exclude: name parts that exclude a Linear (the LM head is quantised with ``embeddings``).
        kernel: int4 compute kernel of :class:`QuantLinear4` (``'auto' | 'dequant' | 'native' |
            'cached'``).
        embeddings: also store the input embedding table (and the LM head, a tied head sharing the
            table's codes) in ``'int4'`` or ``'int8'`` (llama.cpp's Q8_0), or ``False``; ``True``
            means ``'int4'``.
        embed_group_size: group size of the table / LM head (``None``: ``group_size``); needs
            ``embeddings``.
        clip_search: grid size of a per-group clipping search of the int4 ranges (least squared
            weight error; 0: min-max ranges).
        zero_point: ``'int'`` (integer zero points, GPTQ / AWQ) or ``'offset'`` (fp16 group
            offsets, llama.cpp's Q4_1: weights already on such a grid are kept exactly).
        keep_lora: ``False``: LoRA adapters are merged into the base weights first (by
            ``quantize_bevvlm``; a model with several adapters is refused). ``True``: only the base
            layers are quantised and every adapter stays unmerged beside them (QLoRA-style).
        lora_dtype: dtype of the kept adapters (``None``: as trained); used with ``keep_lora``.
        rotation: rotate the decoder's residual stream before quantising (:mod:`.rotation`:
            QuaRot-style incoherence processing; the float model computes the same function, the
            Linears lose their outlier input columns): ``None`` (off), ``'hadamard'`` or
            ``'orthogonal'``; Llama / Mistral / Qwen2 / Qwen3 only, LoRA merged (not with
            ``keep_lora``). Only the settings are stored: loading rebuilds the same rotation.
        rotation_seed: seed of the rotation's signs (``'hadamard'``) or Gaussian matrix.
        rotation_mlp: with ``rotation='hadamard'``, also rotate each MLP's inner width (an online
            Hadamard transform before ``down_proj``, QuaRot's R4; the Linear is then named
            ``...mlp.down_proj.down_proj``).
    """

    method: ClassVar[str] = "rtn"

    bits: int = 4
    group_size: int = 64
    group_sizes: tuple[tuple[str, int], ...] = ()
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ("lm_head",)
    kernel: str = "auto"
    embeddings: bool | str = False
    embed_group_size: int | None = None
    clip_search: int = 0
    zero_point: str = "int"
    keep_lora: bool = False
    lora_dtype: str | None = "bfloat16"
    rotation: str | None = None
    rotation_seed: int = 0
    rotation_mlp: bool = False

    def __post_init__(self) -> None:
        m = self.method
        if self.bits != 4 or not _is_int(self.bits):
            _fail(m, f"bits={self.bits!r}: method {m!r} stores packed 4-bit codes; use bits=4, or "
                     "method='int8_dynamic' for 8-bit weights")
        if not _is_int(self.group_size) or self.group_size <= 0:
            _fail(m, f"group_size={self.group_size!r} must be a positive integer dividing every quantised "
                     "layer's input width, e.g. 32, 64 or 128")
        object.__setattr__(self, "group_sizes", self._check_group_sizes(self.group_sizes))
        if self.include is not None:
            object.__setattr__(self, "include", _names(m, "include", self.include, allow_empty=False))
        object.__setattr__(self, "exclude", _names(m, "exclude", self.exclude, allow_empty=True))
        if self.kernel not in KERNELS:
            _fail(m, f"kernel={self.kernel!r} is not one of {KERNELS}")
        embeddings = "int4" if self.embeddings is True else self.embeddings
        if embeddings not in EMBEDDINGS:
            _fail(m, f"embeddings={self.embeddings!r} is not one of False, True / 'int4', 'int8'")
        object.__setattr__(self, "embeddings", embeddings)
        if self.embed_group_size is not None:
            if not _is_int(self.embed_group_size) or self.embed_group_size <= 0:
                _fail(m, f"embed_group_size={self.embed_group_size!r} must be a positive integer dividing the "
                         "embedding width (or None: group_size)")
            if not embeddings:
                _fail(m, f"embed_group_size={self.embed_group_size} has no effect with embeddings=False; set "
                         "embeddings='int4' or 'int8', or drop embed_group_size")
        if not _is_int(self.clip_search) or self.clip_search < 0:
            _fail(m, f"clip_search={self.clip_search!r} must be an integer >= 0 (0: min-max ranges; e.g. 20)")
        if self.zero_point not in ZERO_POINTS:
            _fail(m, f"zero_point={self.zero_point!r} is not one of {ZERO_POINTS}")
        _check_lora(m, self.keep_lora, self.lora_dtype)
        if self.rotation not in (None,) + ROTATIONS:
            _fail(m, f"rotation={self.rotation!r} is not one of None, {', '.join(map(repr, ROTATIONS))}")
        if not _is_int(self.rotation_seed) or self.rotation_seed < 0:
            _fail(m, f"rotation_seed={self.rotation_seed!r} must be an integer >= 0")
        if not isinstance(self.rotation_mlp, bool):
            _fail(m, f"rotation_mlp={self.rotation_mlp!r} must be True or False")
        if self.rotation_mlp and self.rotation != "hadamard":
            _fail(m, f"rotation_mlp=True applies a Hadamard transform online; it needs rotation='hadamard' "
                     f"(got rotation={self.rotation!r})")
        if self.rotation is not None and self.keep_lora:
            _fail(m, f"rotation={self.rotation!r} rotates the merged weights; the kept LoRA adapters would read the "
                     "unrotated stream: use keep_lora=False (LoRA merged) or rotation=None")

    def _check_group_sizes(self, value: Any) -> tuple[tuple[str, int], ...]:
        """``group_sizes`` (a dict, or ``(part, size)`` pairs) as checked pairs, in order."""
        m = self.method
        if value is None:
            return ()
        if isinstance(value, Mapping):
            pairs = list(value.items())
        elif isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
            pairs = [tuple(p) for p in value]
        else:
            _fail(m, f"group_sizes={value!r} must be a dict {{layer-name part: group size}}, "
                     "e.g. {'gate_proj': 64, 'up_proj': 64}")
        for key, size in pairs:
            if not isinstance(key, str) or not key or "." in key:
                _fail(m, f"group_sizes key {key!r} is not a layer-name part; use the last part of a layer's "
                         "dotted name, e.g. 'gate_proj'")
            if not _is_int(size) or size <= 0:
                _fail(m, f"group_sizes[{key!r}]={size!r} must be a positive integer dividing that layer's "
                         "input width, e.g. 32, 64 or 128")
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            _fail(m, f"group_sizes names a layer-name part twice: {keys}")
        return tuple((k, int(s)) for k, s in pairs)

    def group_size_of(self, name: str) -> int:
        """Group size of the layer with dotted ``name``: the first ``group_sizes`` part in its
        name, else ``group_size``."""
        parts = name.split(".")
        return next((size for part, size in self.group_sizes if part in parts), self.group_size)

    @property
    def table_group_size(self) -> int:
        """Group size of the embedding table / LM head (``embed_group_size`` or ``group_size``)."""
        return self.embed_group_size or self.group_size

    def to_dict(self) -> dict:
        """Plain JSON-able dict with ``method`` first; :func:`quant_settings` rebuilds an equal
        object from it (``group_sizes`` as a dict, name tuples as tuples)."""
        out = dict(method=self.method)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = dict(value) if f.name == "group_sizes" else value
        return out

    def replace(self, **changes) -> "RTNSettings":
        """A copy with ``changes`` applied (validated like a new object)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class GPTQSettings(RTNSettings):
    """int4 GPTQ (Frantar et al., 2022): the fields of :class:`RTNSettings` plus calibration.

    Attributes:
        act_order: visit the columns by decreasing Hessian diagonal (static groups).
        damping: dampening added to the Hessian, as a fraction of its mean diagonal.
        sequential: calibrate block by block on inputs from the already quantised blocks (one
            calibration run per decoder layer) instead of one run on float inputs for all layers.
        calib_mode: how the model-level function turns calibration frames into layer inputs:
            ``'teacher_forced'`` (one packed forward per frame over its reference QA; every answer
            token is a calibration row) or ``'greedy'`` (each question answered for
            ``calib_tokens`` greedy tokens).
        calib_tokens: greedy tokens per question with ``calib_mode='greedy'``.
        awq_grid: activation-aware scaling before GPTQ (:mod:`.awq`): per Linear, ``alpha`` is
            searched over ``awq_grid + 1`` values in [0, 1] on the calibration Hessian; 0 = off.
        group_budget: average stored bits per weight of the selected Linears (``4 + 32 / g`` at
            group size ``g``: 5.0 at 32, 4.5 at 64, 4.25 at 128); with it the group size of each
            Linear is chosen among ``group_choices`` by its measured sensitivity (:mod:`.allocation`:
            one extra calibration run on float inputs, every candidate quantised and scored), and
            ``group_size`` / ``group_sizes`` no longer apply to the Linears. ``None``: off.
        group_choices: candidate group sizes with ``group_budget`` (those dividing a layer's input
            width are its candidates).
        table_rows: with ``embeddings='int4'`` and a tied LM head: keep up to this many table rows
            also in int8 (:class:`QuantEmbedding4` ``precise_rows``), the tokens the calibration text
            (prompt, questions, reference answers) uses most; their lookups and logits come from the
            int8 rows (0.6 MB per 1000 rows of a 576-wide table). 0: off.
        sensitivity: how ``group_budget`` scores a Linear's quantisation error: ``'output'`` (its
            relative output error on the calibration inputs) or ``'fisher'`` (its output error
            weighted per output channel by the mean squared gradient of the reference answers' loss
            there, a second-order estimate of the loss increase; needs a backward pass per
            calibration frame, ``calib_mode='teacher_forced'``).
    """

    method: ClassVar[str] = "gptq"

    act_order: bool = False
    damping: float = 0.01
    sequential: bool = True
    calib_mode: str = "teacher_forced"
    calib_tokens: int = 8
    awq_grid: int = 0
    group_budget: float | None = None
    group_choices: tuple[int, ...] = (32, 64, 128)
    sensitivity: str = "output"
    table_rows: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        m = self.method
        if not _is_int(self.table_rows) or self.table_rows < 0:
            _fail(m, f"table_rows={self.table_rows!r} must be an integer >= 0 (0: off; e.g. 1000)")
        if self.table_rows and self.embeddings != "int4":
            _fail(m, f"table_rows={self.table_rows} keeps rows of an int4 table in int8; it needs embeddings='int4' "
                     f"(got embeddings={self.embeddings!r})")
        choices = self.group_choices
        if (isinstance(choices, str) or not isinstance(choices, (list, tuple)) or len(choices) < 2
                or not all(_is_int(c) and c > 0 for c in choices) or len(set(choices)) != len(choices)):
            _fail(m, f"group_choices={choices!r} must be two or more distinct positive group sizes, e.g. (32, 64, 128)")
        object.__setattr__(self, "group_choices", tuple(int(c) for c in choices))
        if self.group_budget is not None:
            low, high = group_bits(max(self.group_choices)), group_bits(min(self.group_choices))
            if (isinstance(self.group_budget, bool) or not isinstance(self.group_budget, (int, float))
                    or not low <= self.group_budget <= high):
                _fail(m, f"group_budget={self.group_budget!r} must be a number of stored bits per weight in "
                         f"[{low}, {high}] for group_choices={self.group_choices} (4 + 32 / group size)")
            if self.group_sizes:
                _fail(m, f"group_budget={self.group_budget} chooses every Linear's group size; drop "
                         f"group_sizes={dict(self.group_sizes)}")
            object.__setattr__(self, "group_budget", float(self.group_budget))
        if self.sensitivity not in SENSITIVITIES:
            _fail(m, f"sensitivity={self.sensitivity!r} is not one of {SENSITIVITIES}")
        if self.sensitivity == "fisher" and self.calib_mode != "teacher_forced":
            _fail(m, "sensitivity='fisher' needs the reference answers' loss: use calib_mode='teacher_forced'")
        if not _is_int(self.awq_grid) or self.awq_grid < 0:
            _fail(m, f"awq_grid={self.awq_grid!r} must be an integer >= 0 (0: no activation-aware scaling; e.g. 10)")
        for key in ("act_order", "sequential"):
            if not isinstance(getattr(self, key), bool):
                _fail(m, f"{key}={getattr(self, key)!r} must be True or False")
        if isinstance(self.damping, bool) or not isinstance(self.damping, (int, float)) or not 0 < self.damping <= 1:
            _fail(m, f"damping={self.damping!r} must be a fraction in (0, 1] of the mean Hessian diagonal "
                     "(GPTQ's default 0.01)")
        object.__setattr__(self, "damping", float(self.damping))
        if self.calib_mode not in CALIB_MODES:
            _fail(m, f"calib_mode={self.calib_mode!r} is not one of {CALIB_MODES}")
        if not _is_int(self.calib_tokens) or self.calib_tokens <= 0:
            _fail(m, f"calib_tokens={self.calib_tokens!r} must be a positive integer (greedy tokens per question)")


@dataclass(frozen=True)
class Int8DynamicSettings:
    """int8 dynamic quantisation of Linears through ``torch.ao`` (fbgemm; CPU only).

    Attributes:
        include: last name parts of the Linears to quantise (leave out ``down_proj`` on SmolLM2:
            its activation outliers ruin per-tensor int8 activations); ``None`` (default): every
            decoder-layer Linear of the model's architecture, as :attr:`RTNSettings.include`.
        exclude: name parts that exclude a Linear.
        per_channel: one int8 weight scale per output channel (else one per tensor).
        keep_lora, lora_dtype: as :class:`RTNSettings`.
    """

    method: ClassVar[str] = "int8_dynamic"

    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ("lm_head",)
    per_channel: bool = True
    keep_lora: bool = False
    lora_dtype: str | None = "bfloat16"

    def __post_init__(self) -> None:
        m = self.method
        if self.include is not None:
            object.__setattr__(self, "include", _names(m, "include", self.include, allow_empty=False))
        object.__setattr__(self, "exclude", _names(m, "exclude", self.exclude, allow_empty=True))
        if not isinstance(self.per_channel, bool):
            _fail(m, f"per_channel={self.per_channel!r} must be True or False")
        _check_lora(m, self.keep_lora, self.lora_dtype)

    def to_dict(self) -> dict:
        """Plain JSON-able dict with ``method`` first (see :meth:`RTNSettings.to_dict`)."""
        return dict(method=self.method, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    def replace(self, **changes) -> "Int8DynamicSettings":
        """A copy with ``changes`` applied (validated like a new object)."""
        return dataclasses.replace(self, **changes)


#: Any settings object.
QuantSettings = RTNSettings | GPTQSettings | Int8DynamicSettings
SETTINGS_CLASSES: dict[str, type] = {"rtn": RTNSettings, "gptq": GPTQSettings, "int8_dynamic": Int8DynamicSettings}


def is_quant_settings(value: Any) -> bool:
    """Whether ``value`` is a settings object (not a dict)."""
    return isinstance(value, (RTNSettings, Int8DynamicSettings))


def quant_settings(spec: Mapping | QuantSettings) -> QuantSettings:
    """The settings object of ``spec``.

    Args:
        spec: a settings object (returned as it is), or a dict such as a variant's ``quant``
            switch: ``method`` (``'rtn' | 'gptq' | 'int8_dynamic'``) selects the class, the other
            keys are its fields.

    Returns:
        :class:`RTNSettings`, :class:`GPTQSettings` or :class:`Int8DynamicSettings`.

    Raises:
        ValueError: no / unknown ``method``, a key that is not a field of that method's class
            (the message lists the valid keys, and the new name of a renamed option), or a bad
            value.
    """
    if is_quant_settings(spec):
        return spec
    if not isinstance(spec, Mapping):
        raise ValueError(f"quant settings: expected a dict with a 'method' key or a settings object, got "
                         f"{type(spec).__name__} {spec!r}")
    spec = dict(spec)
    if "method" not in spec:
        raise ValueError(f"quant settings {spec}: no 'method' key; add method='rtn' | 'gptq' | 'int8_dynamic'")
    method = spec.pop("method")
    if method not in SETTINGS_CLASSES:
        raise ValueError(f"quant settings: method={method!r} is not one of {METHODS}")
    cls = SETTINGS_CLASSES[method]
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in spec if k not in valid]
    if unknown:
        hints = []
        for key in unknown:
            if key in RENAMED:
                hints.append(f"{key!r} is now called {RENAMED[key]!r}")
            else:
                owners = [name for name, other in SETTINGS_CLASSES.items()
                          if key in {f.name for f in dataclasses.fields(other)}]
                if owners:
                    hints.append(f"{key}={spec[key]!r} is an option of method {' / '.join(owners)}, not of {method!r}")
        hint = f" ({'; '.join(hints)})" if hints else ""
        raise ValueError(f"quant settings (method={method!r}): unknown keys {unknown}{hint}; valid keys: "
                         f"{['method'] + valid}")
    return cls(**spec)

