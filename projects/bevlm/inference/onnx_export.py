"""ONNX export of BEVVLM's vision path, an onnxruntime runner and dynamic int8 quantisation.

What is exported (:class:`VisionPath`): the part of a ``vision='bev'`` :class:`BEVVLM` that turns
one frame's six normalised camera images, their ``ego2img`` projections and, for a temporal
encoder, the previous BEV with its ego motion into the visual tokens the LLM reads:

    image backbone -> FPN neck -> BEVFormer-lite encoder (temporal self-attention over the warped
    previous BEV, spatial cross-attention into the cameras) -> projector

Graph inputs (batch ``B`` and image size fixed to those of the sample inputs):

=============== ======================= ===========================================================
``imgs``        ``[B, N, 3, H, W]`` f32 normalised images (the data preprocessor's output, one frame)
``ego2img``     ``[B, N, 4, 4]`` f32    ego -> pixel projection of each camera at ``(H, W)``
``prev_bev``    ``[B, Hb*Wb, C]`` f32   previous frame's BEV in its own ego frame (the ``bev``
                                        output of the previous call); zeros when there is none
``prev2curr``   ``[B, 4, 4]`` f32       previous -> current ego motion (:class:`EgoMotion`); any
                                        invertible 4x4 (identity) where ``prev_valid`` is False
``prev_valid``  ``[B]`` bool            False: no usable previous BEV (first frame of a scene, a
                                        skipped frame), the current queries stand in for it
=============== ======================= ===========================================================

The last three exist only when the encoder has temporal self-attention (``use_temporal``).
Graph outputs: ``visual_tokens [B, N_vis, D]`` (the projector's output, before any pruning) and
``bev [B, Hb*Wb, C]`` (to pass as ``prev_bev`` with the next frame).

Not exported: the data preprocessor (uint8 -> normalised float: do it before the graph), the
temporal cache bookkeeping (which frame's BEV is the previous one: the caller's, e.g.
:class:`~bevlm.models.temporal_cache.TemporalBEVCache`), visual-token pruning by the auxiliary
head's occupancy (``test_cfg.pruning.bev_keep_ratio``) and the auxiliary head itself, the
``'camera'`` / ``'blind'`` vision modes and ``temporal_fusion='tokens'`` (refused), and everything
after the visual tokens (prompt, ego-status and trajectory tokens, the LLM). The BEV encoder's
early exit (``test_cfg.pruning.encoder_layers``) is exported as set on the model.

Two computations differ from the eager model in form, not in result, under ``torch.export``
only: spatial cross-attention orders the queries each camera sees by cumulative sums instead of
a stable sort (ONNX has none), their number staying a size computed in the graph, and the
ego-motion inverse of the warp is a closed-form 4x4 inverse
(:func:`~bevlm.models.bev.temporal_self_attn.inverse_4x4`; ONNX has no inverse operator).
``static_shapes=True`` exports a graph with fixed tensor shapes instead (every camera over all
BEV queries, :attr:`SpatialCrossAttention.static_shapes`), for runtimes that need them.

``onnx``, ``onnxruntime`` and ``onnxscript`` (``torch.onnx``'s exporter needs it) are optional
dependencies (``requirements/tests.txt``), imported when a function here needs them.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from bevlm.structures import EgoMotion
from bevlm.utils import atomic_write

from ..models.bev.multiview_encoder import extract_multiview_feats

__all__ = ["INSTALL_HINT", "OUTPUT_NAMES", "ORTVisionRunner", "VisionPath", "export_vision_onnx",
           "output_errors", "quantize_onnx_int8"]

#: How to install the optional dependencies (named in every ImportError of this module).
INSTALL_HINT = 'pip install onnx onnxruntime onnxscript "numpy<2"  (or: pip install -r requirements/tests.txt)'
#: Graph outputs, in order.
OUTPUT_NAMES = ("visual_tokens", "bev")
#: Metadata key of the exported file (a JSON string describing the graph).
METADATA_KEY = "bevlm.vision_path"
#: Default ONNX opset.
DEFAULT_OPSET = 18


def _require(module: str):
    """Import an optional dependency, or raise ImportError naming the pip command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"bevlm.inference.onnx_export needs the optional package {module.split('.')[0]!r}, "
                          f"which is not installed ({exc}). Fix: {INSTALL_HINT}") from exc


class VisionPath(nn.Module):
    """The vision path of a built ``vision='bev'`` BEVVLM with plain tensor inputs and outputs.

    Shares (does not copy) the model's ``img_backbone``, ``img_neck``, ``bev_encoder`` and
    ``projector``; in eval mode it computes exactly what ``BEVVLM.visual_tokens`` computes for a
    streamed frame (before pruning), given the same previous BEV. Inputs and outputs: see the
    module docstring.

    Args:
        model: a :class:`~bevlm.models.detectors.BEVVLM` with ``vision='bev'`` and
            ``temporal_fusion='bev'``, in eval mode (its weights loaded).
        encoder_layers: BEV encoder layers to run; None = the model's test-time setting
            (``test_cfg.pruning.encoder_layers``, None = all), as ``BEVVLM`` does in eval mode.

    Raises:
        ValueError: a model whose vision path this class does not cover.
    """

    def __init__(self, model: nn.Module, encoder_layers: int | None = None) -> None:
        super().__init__()
        vision = getattr(model, "vision", None)
        fusion = getattr(model, "temporal_fusion", None)
        if vision != "bev" or fusion != "bev" or getattr(model, "bev_encoder", None) is None:
            raise ValueError(f"VisionPath: exports the BEV vision path of a BEVVLM (vision='bev', "
                             f"temporal_fusion='bev'); got {type(model).__name__} with vision={vision!r}, "
                             f"temporal_fusion={fusion!r}. Fix: export a BEV model's config")
        if model.projector is None:
            raise ValueError("VisionPath: the model has no projector; nothing turns its BEV into visual tokens")
        self.img_backbone = model.img_backbone
        self.img_neck = model.img_neck
        self.bev_encoder = model.bev_encoder
        self.projector = model.projector
        if encoder_layers is None:
            test_cfg = getattr(model, "test_cfg", None)
            encoder_layers = test_cfg.pruning.encoder_layers if test_cfg is not None else None
        self.encoder_layers = encoder_layers
        self.temporal = bool(self.bev_encoder.use_temporal)

    @property
    def input_names(self) -> tuple[str, ...]:
        """Graph input names, in the order of :meth:`forward`'s arguments."""
        base = ("imgs", "ego2img")
        return base + ("prev_bev", "prev2curr", "prev_valid") if self.temporal else base

    @property
    def output_names(self) -> tuple[str, ...]:
        return OUTPUT_NAMES

    @property
    def bev_shape(self) -> tuple[int, int]:
        """``(Hb*Wb, C)`` of one sample's BEV."""
        enc = self.bev_encoder
        return enc.bev_h * enc.bev_w, enc.embed_dims

    def forward(self, imgs: Tensor, ego2img: Tensor, prev_bev: Tensor | None = None,
                prev2curr: Tensor | None = None, prev_valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Visual tokens ``[B, N_vis, D]`` and BEV ``[B, Hb*Wb, C]`` of one frame (see the module docstring)."""
        if imgs.dim() != 5:
            raise ValueError(f"VisionPath: imgs must be [B, N, 3, H, W] (one frame, normalised), got "
                             f"{tuple(imgs.shape)}")
        feats = extract_multiview_feats(self.img_backbone, self.img_neck, imgs)
        motion = None
        if self.temporal:
            if prev_bev is None or prev2curr is None or prev_valid is None:
                raise ValueError("VisionPath: a temporal encoder takes prev_bev, prev2curr and prev_valid "
                                 "(zeros, identity and False where there is no previous BEV); "
                                 "make_inputs() fills them")
            motion = EgoMotion(prev2curr, prev_valid)
        else:
            prev_bev = None
        bev = self.bev_encoder(feats, ego2img, tuple(int(s) for s in imgs.shape[-2:]), prev_bev=prev_bev,
                               ego_motion=motion, num_layers=self.encoder_layers)
        return self.projector(bev), bev

    def make_inputs(self, imgs: Tensor, ego2img: Tensor, prev_bev: Tensor | None = None,
                    ego_motion: EgoMotion | None = None) -> dict[str, Tensor]:
        """The graph inputs of one frame, by name, in input order.

        Args:
            imgs: ``[B, N, 3, H, W]`` normalised images of the frame.
            ego2img: ``[B, N, 4, 4]``.
            prev_bev: ``[B, Hb*Wb, C]`` previous BEV (zeros where absent) or None (no sample has one).
            ego_motion: batched :class:`EgoMotion` (``prev2curr [B, 4, 4]``, ``valid [B]``);
                None = no previous BEV.

        Returns:
            name -> tensor (float32 / bool), as :meth:`forward` and :class:`ORTVisionRunner` take them.
        """
        b = imgs.shape[0]
        inputs = {"imgs": imgs.float(), "ego2img": ego2img.float()}
        if not self.temporal:
            return inputs
        q, c = self.bev_shape
        if prev_bev is None or ego_motion is None:
            prev_bev = imgs.new_zeros(b, q, c)
            prev2curr = torch.eye(4, device=imgs.device).expand(b, 4, 4).clone()
            valid = torch.zeros(b, dtype=torch.bool, device=imgs.device)
        else:
            prev2curr = ego_motion.prev2curr.float()
            if prev2curr.dim() == 2:
                prev2curr = prev2curr.expand(b, 4, 4)
            valid = ego_motion.valid
            valid = (valid.to(torch.bool).reshape(-1).expand(b) if torch.is_tensor(valid)
                     else torch.full((b,), bool(valid)))
            prev2curr = torch.where(valid.view(b, 1, 1), prev2curr, torch.eye(4, device=prev2curr.device))
        inputs.update(prev_bev=prev_bev.float(), prev2curr=prev2curr.contiguous().float(),
                      prev_valid=valid.to(device=imgs.device).clone())
        return inputs

    def describe(self, inputs: Mapping[str, Tensor]) -> dict:
        """What the graph of these sample inputs is (stored in the exported file's metadata)."""
        enc = self.bev_encoder
        return {
            "inputs": {k: list(v.shape) for k, v in inputs.items()},
            "outputs": list(OUTPUT_NAMES),
            "temporal": self.temporal,
            "bev_h": enc.bev_h, "bev_w": enc.bev_w, "embed_dims": enc.embed_dims, "pc_range": list(enc.pc_range),
            "encoder_layers": self.encoder_layers if self.encoder_layers is not None else enc.num_layers,
            "num_visual_tokens": int(getattr(self.projector, "num_tokens", -1)),
            "torch": torch.__version__,
        }


@contextmanager
def _static_shapes(module: nn.Module, on: bool):
    """Set ``static_shapes`` on every spatial cross-attention of ``module`` for the block."""
    from ..models.bev.spatial_cross_attn import SpatialCrossAttention

    mods = [m for m in module.modules() if isinstance(m, SpatialCrossAttention)]
    saved = [m.__dict__.get("static_shapes") for m in mods]
    for m in mods:
        m.static_shapes = on
    try:
        yield
    finally:
        for m, value in zip(mods, saved):
            if value is None:
                del m.static_shapes
            else:
                m.static_shapes = value


@contextmanager
def _eval_mode(module: nn.Module):
    """Run with every submodule in eval mode; restore each one's mode afterwards."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes.items():
            m.training = mode


def _as_inputs(path_module: VisionPath, sample_inputs) -> dict[str, Tensor]:
    names = path_module.input_names
    if isinstance(sample_inputs, Mapping):
        missing = [n for n in names if n not in sample_inputs]
        extra = [n for n in sample_inputs if n not in names]
        if missing or extra:
            raise KeyError(f"export_vision_onnx: sample inputs must be named {list(names)}; missing {missing}, "
                           f"unexpected {extra} (VisionPath.make_inputs builds them)")
        return {n: sample_inputs[n] for n in names}
    sample_inputs = tuple(sample_inputs)
    if len(sample_inputs) != len(names):
        raise ValueError(f"export_vision_onnx: {len(sample_inputs)} sample inputs, the graph takes {len(names)} "
                         f"({list(names)})")
    return dict(zip(names, sample_inputs))


def export_vision_onnx(model: nn.Module, sample_inputs, path: str, opset: int = DEFAULT_OPSET,
                       encoder_layers: int | None = None, static_shapes: bool = False) -> dict:
    """Export the vision path to an ONNX file (``torch.onnx.export``, dynamo exporter).

    Batch size and image size are those of ``sample_inputs``; every tensor value (images, camera
    geometry, previous BEV, motion, validity) is a graph input, nothing of them is baked in.

    Args:
        model: a BEVVLM (see :class:`VisionPath`) or a :class:`VisionPath`. Exported in eval mode;
            the modules' train/eval modes are restored afterwards.
        sample_inputs: a dict by input name (:meth:`VisionPath.make_inputs`) or a tuple in input order.
        path: the ``.onnx`` file to write (atomically; weights inside the file, no external data).
        opset: ONNX opset of the default domain.
        encoder_layers: see :class:`VisionPath` (only when ``model`` is a BEVVLM).
        static_shapes: fixed tensor shapes throughout the graph (spatial cross-attention over all
            BEV queries, about 3x its sampling work) instead of the per-camera number of visible
            queries computed in the graph; the same result.

    Returns:
        The description stored in the file's metadata (``METADATA_KEY``), plus ``path`` and ``opset``.
    """
    _require("onnx")
    _require("onnxscript")
    import onnx

    vision = model if isinstance(model, VisionPath) else VisionPath(model, encoder_layers=encoder_layers)
    inputs = _as_inputs(vision, sample_inputs)
    with _eval_mode(vision), _static_shapes(vision, static_shapes), torch.no_grad():
        program = torch.onnx.export(vision, tuple(inputs.values()), dynamo=True, opset_version=opset,
                                    input_names=list(inputs), output_names=list(OUTPUT_NAMES),
                                    external_data=False, verbose=False)
    proto = program.model_proto
    desc = vision.describe(inputs)
    desc.update(opset=opset, static_shapes=bool(static_shapes))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(desc)
    onnx.checker.check_model(proto)
    atomic_write(path, lambda f: f.write(proto.SerializeToString()), binary=True)
    return dict(desc, path=path)


def cpu_lacks_vnni() -> bool:
    """True on an x86 Linux CPU without VNNI (no ``avx512_vnni`` / ``avx_vnni`` flag): there
    onnxruntime's uint8 x int8 kernels (AVX2 ``pmaddubsw``) can saturate on full-range int8 weights,
    which onnxruntime's quantisation guide answers with ``reduce_range`` (7-bit weights). False
    elsewhere (VNNI, other architectures, or no /proc/cpuinfo to read)."""
    import platform

    from bevlm.utils.profiling import cpu_model_and_flags

    flags = cpu_model_and_flags()[1]
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686") or not flags:
        return False
    return not flags & {"avx512_vnni", "avx_vnni"}


def quantize_onnx_int8(path_in: str, path_out: str, per_channel: bool = False,
                       op_types: Sequence[str] | None = None, reduce_range: bool | None = None) -> str:
    """Dynamic int8 quantisation (``onnxruntime.quantization.quantize_dynamic``).

    Weights of the quantised operators are stored as int8 with their scales; activations are
    quantised to uint8 at run time, per tensor (``DynamicQuantizeLinear``). Everything else
    (grid sampling, softmax, layer norms, the geometry) stays float32.

    Args:
        path_in: an fp32 ONNX file (:func:`export_vision_onnx`).
        path_out: the int8 file to write (atomically).
        per_channel: one weight scale per output channel instead of per tensor.
        op_types: operator types to quantise (e.g. ``['MatMul']``); None = every type
            ``quantize_dynamic`` supports (here Conv and MatMul).
        reduce_range: 7-bit weights (``quantize_dynamic(reduce_range=True)``); None = on a CPU
            without VNNI (:func:`cpu_lacks_vnni`), where the full 8 bits can saturate: on an AVX2-only
            EPYC the tiny model's int8 BEV deviated by 17-19 % of its scale with full-range weights.

    Returns:
        ``path_out``.
    """
    _require("onnx")
    quant = _require("onnxruntime.quantization")
    if not os.path.isfile(path_in):
        raise FileNotFoundError(f"{path_in}: ONNX model not found. Fix: export it first "
                                "(export_vision_onnx, or python tools/export_onnx.py CONFIG CKPT --out DIR)")
    folder = os.path.dirname(os.path.abspath(path_out))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp_{os.getpid()}_{os.path.basename(path_out)}")
    try:
        if reduce_range is None:
            reduce_range = cpu_lacks_vnni()
        quant.quantize_dynamic(path_in, tmp, weight_type=quant.QuantType.QInt8, per_channel=per_channel,
                               reduce_range=bool(reduce_range),
                               op_types_to_quantize=list(op_types) if op_types else None)
        os.replace(tmp, path_out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path_out


class ORTVisionRunner:
    """Runs an exported vision path with onnxruntime (CPU by default).

    Args:
        path: the ``.onnx`` file (fp32 or int8).
        threads: onnxruntime intra-op threads (None = onnxruntime's default, one per physical
            core; set it to torch's thread count for side-by-side timing).
        providers: onnxruntime execution providers.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message says how to make it).
    """

    def __init__(self, path: str, threads: int | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        ort = _require("onnxruntime")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: ONNX model not found. Fix: export it first "
                                    "(export_vision_onnx, or python tools/export_onnx.py CONFIG CKPT --out DIR)")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(path, options, providers=list(providers))
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        self.description = json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else {}

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs)

    def _feed(self, inputs: Mapping[str, Tensor | np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.inputs if n not in inputs]
        extra = [n for n in inputs if n not in self.inputs]
        if missing or extra:
            raise KeyError(f"{self.path}: the graph takes inputs {self.input_names}; missing {missing}, "
                           f"unexpected {extra}")
        feed = {}
        for name, info in self.inputs.items():
            value = inputs[name]
            arr = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
            arr = np.ascontiguousarray(arr, dtype=np.bool_ if info.type == "tensor(bool)" else np.float32)
            if list(arr.shape) != list(info.shape):
                raise ValueError(f"{self.path}: input {name!r} must have shape {list(info.shape)} (the exported "
                                 f"batch / image size), got {list(arr.shape)}. Fix: feed that shape or export "
                                 "again with sample inputs of the new shape")
            feed[name] = arr
        return feed

    def run_numpy(self, inputs: Mapping[str, Tensor | np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name as numpy arrays."""
        return dict(zip(self.output_names, self.session.run(self.output_names, self._feed(inputs))))

    def __call__(self, inputs: Mapping[str, Tensor | np.ndarray]) -> tuple[Tensor, ...]:
        """``(visual_tokens, bev)`` as torch tensors, like :meth:`VisionPath.forward`."""
        out = self.run_numpy(inputs)
        return tuple(torch.from_numpy(out[name]) for name in self.output_names)


def output_errors(reference: Tensor, output: Tensor) -> dict[str, float]:
    """Deviation of ``output`` from ``reference``.

    Returns:
        ``max_abs`` (max absolute error), ``mean_abs``, ``scale`` (max absolute reference value)
        and ``rel`` = ``max_abs / scale`` (the max error relative to the output's scale).
    """
    ref = reference.detach().double().cpu()
    out = output.detach().double().cpu()
    if ref.shape != out.shape:
        raise ValueError(f"output_errors: shapes differ: reference {tuple(ref.shape)}, output {tuple(out.shape)}")
    diff = (out - ref).abs()
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    max_abs = float(diff.max()) if diff.numel() else 0.0
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return {"max_abs": max_abs, "mean_abs": float(diff.mean()) if diff.numel() else 0.0, "scale": scale, "rel": rel}
