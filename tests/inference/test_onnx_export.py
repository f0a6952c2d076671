"""ONNX export of the BEV vision path (bevlm.inference.onnx_export, tools/export_onnx.py).

Tiny randomly initialised model (configs/bev_vlm_tiny.py: 64x36 images, 8x8 BEV, 32 channels, here
with 2 encoder layers and query-dependent attention weights). Tolerances, relative to the output
scale (max |PyTorch value|):

- onnxruntime fp32 vs PyTorch: ``FP32_REL_TOL = 1e-4`` (measured: about 3e-7 on this model, 5e-7 on
  the default-size architecture);
- onnxruntime dynamic int8 vs PyTorch: ``INT8_REL_TOL = 0.1`` (measured: about 1.2e-2 here, 1.5-2.9e-2
  on the default-size architecture).

No timing is asserted.
"""
import importlib.util
import math
import os
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import bevlm.testing  # noqa: F401  (registers the tiny LLM builder)
from bevlm.inference.onnx_export import (INSTALL_HINT, ORTVisionRunner, VisionPath, export_vision_onnx, output_errors,
                                         quantize_onnx_int8)
from bevlm.models.bev.spatial_cross_attn import (SpatialCrossAttention, _stable_partition, ego2img_from_rig,
                                                 project_reference_points)
from bevlm.models.bev.temporal_self_attn import inverse_4x4
from bevlm.registry import MODELS
from bevlm.structures import CAMERA_NAMES, DriveDataSample, EgoMotion, camera_rig
from tests.conftest import REPO

FP32_REL_TOL = 1e-4
INT8_REL_TOL = 0.1
IMG_WH = (64, 36)


def _tiny_model(use_temporal: bool = True, seed: int = 0):
    init_default_scope("bevlm")
    cfg = Config.fromfile(os.path.join(REPO, "configs/bev_vlm_tiny.py"))
    mcfg = cfg.model.to_dict()
    mcfg["bev_encoder"].update(num_layers=2, use_temporal=use_temporal)
    torch.manual_seed(seed)
    model = MODELS.build(mcfg).eval()
    with torch.no_grad():  # attention weights start at zero: make them (and the offsets) depend on the query
        for name, p in model.bev_encoder.named_parameters():
            if "attention_weights" in name or "sampling_offsets.weight" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _rot_z(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    m = torch.eye(4)
    m[:2, :2] = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return m


def _ego2img(rig: str, yaw_deg: float = 0.0) -> torch.Tensor:
    """``[1, 6, 4, 4]``: the rig's projections, the ego frame turned by ``yaw_deg`` about z."""
    return (ego2img_from_rig(camera_rig(rig, IMG_WH), CAMERA_NAMES) @ _rot_z(yaw_deg))[None]


def _motion(yaw_deg: float, dx: float, dy: float, valid: bool) -> EgoMotion:
    m = _rot_z(yaw_deg)
    m[0, 3], m[1, 3] = dx, dy
    return EgoMotion(m[None], torch.tensor([valid]))


def _inputs(vision, seed, rig="nuscenes", yaw_deg=0.0, motion=None, prev=True):
    g = torch.Generator().manual_seed(seed)
    q, c = vision.bev_shape
    imgs = torch.randn(1, 6, 3, IMG_WH[1], IMG_WH[0], generator=g)
    prev_bev = torch.randn(1, q, c, generator=g) if prev else None
    return vision.make_inputs(imgs, _ego2img(rig, yaw_deg), prev_bev, motion)


def _torch(vision, inputs):
    with torch.no_grad():
        return vision(**inputs)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(model, vision path, fp32 file, int8 file, traced inputs)``."""
    torch.set_num_threads(1)
    model = _tiny_model()
    vision = VisionPath(model)
    traced = _inputs(vision, seed=1, motion=_motion(0.0, 0.0, 0.0, True))
    folder = tmp_path_factory.mktemp("onnx")
    info = export_vision_onnx(model, traced, str(folder / "vision.onnx"))
    int8 = quantize_onnx_int8(info["path"], str(folder / "vision_int8.onnx"))
    return model, vision, info["path"], int8, traced


def _assert_close(ref, out, tol, what):
    for name, r, o in zip(("visual_tokens", "bev"), ref, out):
        err = output_errors(r, o)
        assert err["rel"] <= tol, f"{what}: {name} deviates by {err} (tolerance {tol} of the scale)"


def test_vision_path_is_the_models_streamed_path():
    """VisionPath (eager) computes what BEVVLM.visual_tokens computes when it streams two frames."""
    model = _tiny_model()
    vision = VisionPath(model)
    frames = [_inputs(vision, seed=s, prev=False)["imgs"] for s in (3, 4)]
    ego2img = _ego2img("nuscenes")
    motion = _motion(5.0, 2.0, 0.3, True)
    samples = []
    for k, tok in enumerate(("f0", "f1")):
        samples.append(DriveDataSample(metainfo=dict(
            token=tok, scene_token="s", prev_token="" if k == 0 else "f0", img_shape=(IMG_WH[1], IMG_WH[0]),
            ego2img=ego2img.expand(2, -1, -1, -1), ego_motion=[EgoMotion.identity(False), EgoMotion(motion.prev2curr[0], k > 0)])))
    model.reset_test_state()
    with torch.no_grad():
        ref0 = model.visual_tokens(frames[0][:, None], [samples[0]], streaming=True)
        ref1 = model.visual_tokens(frames[1][:, None], [samples[1]], streaming=True)
    out0 = _torch(vision, vision.make_inputs(frames[0], ego2img))
    out1 = _torch(vision, vision.make_inputs(frames[1], ego2img, out0[1], motion))
    for ref, out in ((ref0, out0), (ref1, out1)):
        for r, o in zip(ref, out):
            torch.testing.assert_close(o, r, rtol=0, atol=1e-6)
    assert not torch.allclose(ref1[1], _torch(vision, vision.make_inputs(frames[1], ego2img))[1], atol=1e-3), \
        "the previous BEV should change frame 1's BEV"


def test_export_helpers_match_eager():
    """The forms only graph export takes: all-query spatial cross-attention, closed-form inverse, sort-free order."""
    model = _tiny_model()
    vision = VisionPath(model)
    inputs = _inputs(vision, seed=5, rig="wide-high", yaw_deg=25.0, motion=_motion(10.0, 3.0, -1.0, True))
    gathered = _torch(vision, inputs)
    SpatialCrossAttention.static_shapes = True
    try:
        static = _torch(vision, inputs)
    finally:
        SpatialCrossAttention.static_shapes = False
    for a, b in zip(gathered, static):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    mats = torch.stack([_motion(d, 0.5 * d, -d, True).prev2curr[0] for d in (0.0, 7.0, -40.0, 170.0)]).double()
    mats = torch.cat([mats, torch.randn(3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))])
    torch.testing.assert_close(inverse_4x4(mats), torch.linalg.inv(mats), rtol=0, atol=1e-12)
    flags = torch.rand(2, 6, 40, generator=torch.Generator().manual_seed(1)) > 0.7
    assert torch.equal(_stable_partition(flags), torch.argsort((~flags).to(torch.int8), dim=-1, stable=True))


def test_onnx_fp32_matches_pytorch_on_new_inputs(tiny):
    """Not only the traced input: other images, camera rig, viewing angle, previous BEV, motion, validity."""
    _, vision, fp32, _, traced = tiny
    import onnx

    runner = ORTVisionRunner(fp32, threads=1)
    assert runner.input_names == ["imgs", "ego2img", "prev_bev", "prev2curr", "prev_valid"]
    assert not runner.description["static_shapes"]
    assert {"CumSum", "ScatterElements"} <= {n.op_type for n in onnx.load(fp32).graph.node}  # visible queries gathered
    cases = {
        "traced": traced,
        "other rig and motion": _inputs(vision, seed=2, rig="wide-high", yaw_deg=30.0, motion=_motion(12.0, 4.0, -1.5, True)),
        "invalid previous BEV": _inputs(vision, seed=6, rig="nuscenes", yaw_deg=-20.0, motion=_motion(3.0, 1.0, 0.0, False)),
        "no previous BEV": _inputs(vision, seed=7, prev=False),
    }
    # the other rig sees more queries per camera than the traced one: a length fixed at trace time would drop some
    counts = {what: project_reference_points(vision.bev_encoder.ref_3d, cases[what]["ego2img"], IMG_WH[::-1])[1]
              .any(-1).sum(-1).max().item() for what in ("traced", "other rig and motion")}
    assert counts["other rig and motion"] > counts["traced"], counts
    refs = {}
    for what, inputs in cases.items():
        refs[what] = _torch(vision, inputs)
        _assert_close(refs[what], runner(inputs), FP32_REL_TOL, what)
    # each input matters (so matching on it is a test that it is not baked in): change one at a time
    base = cases["other rig and motion"]
    for name, value in (("ego2img", traced["ego2img"]), ("prev2curr", traced["prev2curr"]),
                        ("prev_bev", traced["prev_bev"]), ("imgs", traced["imgs"])):
        changed = dict(base, **{name: value})
        ref = _torch(vision, changed)
        assert output_errors(refs["other rig and motion"][1], ref[1])["rel"] > 1e-3, f"{name} changes nothing"
        _assert_close(ref, runner(changed), FP32_REL_TOL, f"changed {name}")
    # an invalid previous BEV is ignored, as when there is none
    torch.testing.assert_close(refs["invalid previous BEV"][1],
                               _torch(vision, dict(cases["invalid previous BEV"], prev_bev=torch.zeros_like(traced["prev_bev"])))[1])


def test_onnx_streams_its_own_bev(tiny):
    """Three frames, each ORT call fed the previous ORT BEV: no error builds up."""
    _, vision, fp32, _, _ = tiny
    runner = ORTVisionRunner(fp32, threads=1)
    ref_prev = ort_prev = None
    for k, motion in enumerate((None, _motion(4.0, 2.0, 0.1, True), _motion(-6.0, 2.5, -0.2, True))):
        imgs = _inputs(vision, seed=20 + k, prev=False)["imgs"]
        ref = _torch(vision, vision.make_inputs(imgs, _ego2img("nuscenes"), ref_prev, motion))
        out = runner(vision.make_inputs(imgs, _ego2img("nuscenes"), ort_prev, motion))
        _assert_close(ref, out, FP32_REL_TOL, f"frame {k}")
        ref_prev, ort_prev = ref[1], out[1]


def test_int8_runs_within_looser_bound(tiny):
    import onnx

    _, vision, fp32, int8, _ = tiny
    ops = {n.op_type for n in onnx.load(int8).graph.node}
    assert {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear"} <= ops
    runner = ORTVisionRunner(int8, threads=1)
    assert runner.description == ORTVisionRunner(fp32, threads=1).description  # the metadata travels along
    inputs = _inputs(vision, seed=2, rig="wide-high", yaw_deg=30.0, motion=_motion(12.0, 4.0, -1.5, True))
    ref = _torch(vision, inputs)
    out = runner(inputs)
    assert all(torch.isfinite(o).all() and o.shape == r.shape for o, r in zip(out, ref))
    _assert_close(ref, out, INT8_REL_TOL, "int8")
    assert output_errors(ref[0], out[0])["max_abs"] > 1e-6  # it is quantised
    matmul_only = quantize_onnx_int8(fp32, os.path.join(os.path.dirname(int8), "matmul.onnx"), op_types=["MatMul"])
    assert "ConvInteger" not in {n.op_type for n in onnx.load(matmul_only).graph.node}
    _assert_close(ref, ORTVisionRunner(matmul_only, threads=1)(inputs), INT8_REL_TOL, "int8 MatMul only")


def test_metadata_and_bad_inputs(tiny, tmp_path):
    _, vision, fp32, _, traced = tiny
    runner = ORTVisionRunner(fp32, threads=1)
    desc = runner.description
    assert (desc["bev_h"], desc["bev_w"], desc["embed_dims"], desc["temporal"]) == (8, 8, 32, True)
    assert desc["inputs"]["imgs"] == [1, 6, 3, 36, 64] and desc["encoder_layers"] == 2
    with pytest.raises(ValueError, match="'imgs' must have shape"):
        runner(dict(traced, imgs=torch.zeros(1, 6, 3, 72, 128)))
    with pytest.raises(KeyError, match="missing \\['prev_valid'\\]"):
        runner({k: v for k, v in traced.items() if k != "prev_valid"})
    missing = str(tmp_path / "nope.onnx")
    with pytest.raises(FileNotFoundError, match="nope.onnx: ONNX model not found. Fix: export it first"):
        ORTVisionRunner(missing)
    with pytest.raises(FileNotFoundError, match="nope.onnx: ONNX model not found"):
        quantize_onnx_int8(missing, str(tmp_path / "out.onnx"))
    assert not os.path.exists(tmp_path / "out.onnx")
    with pytest.raises(KeyError, match="sample inputs must be named"):
        export_vision_onnx(vision, {"imgs": traced["imgs"]}, str(tmp_path / "x.onnx"))


def test_refuses_other_vision_paths():
    from types import SimpleNamespace

    for vision, fusion in (("camera", "bev"), ("blind", "bev"), ("bev", "tokens")):
        fake = SimpleNamespace(vision=vision, temporal_fusion=fusion, bev_encoder=object(), projector=object())
        with pytest.raises(ValueError, match="exports the BEV vision path"):
            VisionPath(fake)


def test_missing_onnxruntime_names_the_install_command(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match="pip install onnx onnxruntime onnxscript") as exc:
        ORTVisionRunner(tiny[2])
    assert INSTALL_HINT in str(exc.value)


def test_encoder_without_temporal_attention_fixed_shapes(tmp_path):
    """A two-input graph (no temporal self-attention), exported with fixed tensor shapes."""
    import onnx

    model = _tiny_model(use_temporal=False, seed=1)
    vision = VisionPath(model)
    assert vision.input_names == ("imgs", "ego2img")
    traced = _inputs(vision, seed=8)
    path = export_vision_onnx(model, traced, str(tmp_path / "v.onnx"), static_shapes=True)["path"]
    sca = [m for m in model.modules() if isinstance(m, SpatialCrossAttention)]
    assert sca and all("static_shapes" not in m.__dict__ for m in sca)  # the switch is undone after export
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert not ops & {"CumSum", "ScatterElements", "GatherElements"}  # no gathering of the visible queries
    runner = ORTVisionRunner(path, threads=1)
    assert runner.input_names == ["imgs", "ego2img"] and runner.description["static_shapes"]
    other = _inputs(vision, seed=9, rig="wide-high", yaw_deg=45.0)
    _assert_close(_torch(vision, other), runner(other), FP32_REL_TOL, "no temporal attention")


def _tool():
    spec = importlib.util.spec_from_file_location("export_onnx_tool", os.path.join(REPO, "tools/export_onnx.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tool_on_the_tiny_world(tiny_world, tmp_path):
    import json

    tool = _tool()
    model = _tiny_model()
    ckpt = str(tmp_path / "tiny.pth")
    torch.save({"state_dict": model.state_dict()}, ckpt)
    data = ["--cfg-options", f"test_dataloader.dataset.ann_file={tiny_world}/infos/bevlm_infos_val.pkl",
            f"test_dataloader.dataset.data_root={tiny_world}/", "model.bev_encoder.num_layers=2"]
    out = str(tmp_path / "out")
    assert tool.main([os.path.join(REPO, "configs/bev_vlm_tiny.py"), ckpt, "--out", out, "--int8", "--frames", "3", "--repeats", "1",
                      "--threads", "1", *data]) == 0
    report = json.load(open(os.path.join(out, "onnx_report.json")))
    assert report["fp32_within_tolerance"] and report["frames"] == 3 and report["threads"] == 1
    assert report["frame_has_previous_bev"] == [False, True, True]  # the temporal input is exercised
    res = report["results"]
    assert set(res) == {"torch_fp32", "ort_fp32", "ort_int8"}
    assert res["ort_fp32"]["errors"]["visual_tokens"]["rel"] <= FP32_REL_TOL
    assert res["ort_int8"]["errors"]["bev"]["rel"] <= INT8_REL_TOL
    assert all(row["median_ms"] > 0 for row in res.values())
    assert os.path.isfile(os.path.join(out, "vision_fp32.onnx")) and os.path.isfile(os.path.join(out, "vision_int8.onnx"))


def test_tool_bad_inputs(tmp_path, capsys):
    tool = _tool()
    with pytest.raises(SystemExit, match="nope.pth: checkpoint not found. Fix"):
        tool.main(["configs/bev_vlm_tiny.py", str(tmp_path / "nope.pth"), "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="missing.py: config not found. Fix"):
        tool.main(["configs/missing.py", str(tmp_path / "nope.pth"), "--out", str(tmp_path)])
    ckpt = tmp_path / "x.pth"
    torch.save({"state_dict": {}}, ckpt)
    with pytest.raises(SystemExit, match="info file not found. Fix: run tools/create_data.py"):
        tool.main(["configs/bev_vlm_tiny.py", str(ckpt), "--out", str(tmp_path), "--cfg-options",
                   f"data_root={tmp_path}/none/"])
    with pytest.raises(SystemExit):
        tool.main(["configs/bev_vlm_tiny.py", str(ckpt), "--out", str(tmp_path), "--frames", "0"])
    assert "--frames and --repeats must be >= 1" in capsys.readouterr().err
