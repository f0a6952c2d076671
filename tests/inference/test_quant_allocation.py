"""Group sizes chosen per Linear by measured sensitivity under a bit budget (``group_budget``)."""
import pytest
import torch

from bevlm.inference.quantization import (HessianAccumulator, QuantLinear4, allocate_group_sizes, group_bits,
                                          load_quantized, quantize_model, save_quantized)
from bevlm.inference.quantization.settings import quant_settings

torch.set_num_threads(1)


def test_group_bits_count_codes_scale_and_zero():
    assert group_bits(32) == 5.0 and group_bits(64) == 4.5 and group_bits(128) == 4.25


def test_allocation_by_hand():
    """Two layers of 1000 weights, candidates 32 / 64 / 128 (5 / 4.5 / 4.25 bits).

    Start: both at 128 (4.25 bits, 8500 bits). Moves, error drop per added bit:
      a 128->64: (1.0-0.5)/250 = 2.0e-3,  a 128->32: (1.0-0.2)/750 = 1.07e-3
      b 128->64: (0.3-0.2)/250 = 4.0e-4,  b 128->32: (0.3-0.1)/750 = 2.7e-4
    Budget 4.5 bits (9000 bits): a -> 64 (8750 bits); then a 64->32 costs 500 (too much), b 128->64
    costs 250 and fits (9000): b -> 64. Budget 4.625 (9250): after a -> 64 (8750), a 64->32 gains
    (0.5-0.2)/500 = 6.0e-4 > b's 4.0e-4 and fits (9250): a -> 32; nothing else fits."""
    errors = {"a": {32: 0.2, 64: 0.5, 128: 1.0}, "b": {32: 0.1, 64: 0.2, 128: 0.3}}
    numels = {"a": 1000, "b": 1000}
    assert allocate_group_sizes(errors, numels, 4.25) == {"a": 128, "b": 128}
    assert allocate_group_sizes(errors, numels, 4.5) == {"a": 64, "b": 64}
    assert allocate_group_sizes(errors, numels, 4.625) == {"a": 32, "b": 128}
    assert allocate_group_sizes(errors, numels, 5.0) == {"a": 32, "b": 32}


def test_allocation_stays_within_budget_and_never_refines_without_gain():
    gen = torch.Generator().manual_seed(0)
    errors, numels = {}, {}
    for i in range(12):
        e128 = float(torch.rand(1, generator=gen)) + 0.1
        errors[f"l{i}"] = {128: e128, 64: e128 * 0.6, 32: e128 * 0.35}
        numels[f"l{i}"] = int(torch.randint(100, 1000, (1,), generator=gen))
    errors["flat"], numels["flat"] = {128: 0.5, 64: 0.5, 32: 0.5}, 5000  # no gain: stays coarse
    total = sum(numels.values())
    for budget in (4.3, 4.5, 4.75, 4.9):
        choice = allocate_group_sizes(errors, numels, budget)
        used = sum(numels[n] * group_bits(g) for n, g in choice.items()) / total
        assert used <= budget + 1e-9
        assert choice["flat"] == 128


def test_allocation_refuses_an_infeasible_budget():
    with pytest.raises(ValueError, match=r"below the coarsest allocation .*choose a budget in \[4.2500, 5.0000\]"):
        allocate_group_sizes({"a": {32: 1.0, 128: 2.0}}, {"a": 10}, 4.0)


def test_settings_check_the_budget():
    s = quant_settings(dict(method="gptq", group_budget=4.75))
    assert s.group_budget == 4.75 and s.group_choices == (32, 64, 128)
    assert quant_settings(s.to_dict()) == s
    with pytest.raises(ValueError, match=r"group_budget=6.0 must be a number of stored bits per weight in \[4.25, 5.0\]"):
        quant_settings(dict(method="gptq", group_budget=6.0))
    with pytest.raises(ValueError, match="chooses every Linear's group size; drop group_sizes"):
        quant_settings(dict(method="gptq", group_budget=4.5, group_sizes={"gate_proj": 64}))
    with pytest.raises(ValueError, match="group_choices"):
        quant_settings(dict(method="gptq", group_choices=(32,)))


def _budget_run(budget, **extra):
    from tests.inference.test_quant_model import _calib, _llm

    llm = _llm()
    report = quantize_model(llm, dict(method="gptq", kernel="dequant", group_budget=budget, **extra), _calib(llm))
    return llm, report


def test_model_under_a_budget_records_its_choice_and_round_trips(tmp_path):
    from tests.inference.test_quant_model import N_LINEARS, _ids

    llm, report = _budget_run(4.5, awq_grid=2)
    layers = {n: m for n, m in llm.lm.named_modules() if isinstance(m, QuantLinear4)}
    assert len(report.groups) == N_LINEARS == len(layers)
    # every layer holds the group size chosen for it, and the stored bits keep to the budget
    for name, size in report.groups.items():
        assert llm.get_submodule(name).group_size == size
        errs = report.sensitivity[name]
        assert set(errs) == {32, 64, 128} and all(e >= 0 for e in errs.values())
    codes = sum(m.qweight.numel() * 2 + 32 * m.scales.numel() for m in layers.values())  # bits
    weights = sum(m.in_features * m.out_features for m in layers.values())
    assert codes / weights <= 4.5 + 1e-9
    assert report.calib_runs == 1 + 2  # the sensitivity run + one per decoder layer
    assert "group sizes chosen" in report.table()
    save_quantized(llm, tmp_path / "q")
    from tests.inference.test_quant_model import _llm
    fresh = _llm()
    load_quantized(fresh, tmp_path / "q")
    with torch.no_grad():
        torch.testing.assert_close(fresh.lm(input_ids=_ids()).logits, llm.lm(input_ids=_ids()).logits)


def test_the_finest_budget_is_plain_gptq_at_the_finest_group():
    """A budget that affords the finest group everywhere gives exactly the codes of group_size=32."""
    from tests.inference.test_quant_model import _calib, _llm

    llm_budget, _ = _budget_run(5.0)
    llm_plain = _llm()
    quantize_model(llm_plain, dict(method="gptq", kernel="dequant", group_size=32), _calib(llm_plain))
    a = {n: m for n, m in llm_budget.lm.named_modules() if isinstance(m, QuantLinear4)}
    b = {n: m for n, m in llm_plain.lm.named_modules() if isinstance(m, QuantLinear4)}
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].group_size == 32
        assert torch.equal(a[name].qweight, b[name].qweight) and torch.equal(a[name].scales, b[name].scales)


def test_sensitive_layers_get_the_finer_groups():
    """Two Linears of one module; one has a few outlier weight columns, which widen the range of every
    group they sit in. With a budget for one refinement (4.375 bits on average: one layer at groups of
    64, the other at 128), the layer whose error drops most per added bit gets it: the one with the
    outliers, where finer groups confine the coarse step to the outliers' own group."""
    torch.manual_seed(0)

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.calm, self.wild = torch.nn.Linear(128, 64), torch.nn.Linear(128, 64)

        def forward(self, x):
            return self.calm(x), self.wild(x)

    net = Two().eval()
    with torch.no_grad():
        net.wild.weight[:, :4] *= 20.0

    def calib(module):
        gen = torch.Generator().manual_seed(1)
        for _ in range(4):
            module(torch.randn(64, 128, generator=gen))

    report = quantize_model(net, dict(method="gptq", kernel="dequant", group_budget=4.375, include=("calm", "wild")),
                            calib)
    assert report.groups == {"calm": 128, "wild": 64}
    wild, calm = report.sensitivity["wild"], report.sensitivity["calm"]
    assert wild[128] - wild[64] > calm[128] - calm[64] > 0


class _TwoHeads(torch.nn.Module):
    """Two Linears reading the same input; ``loss_weights`` make a loss of the first one's output only."""

    def __init__(self):
        super().__init__()
        self.used, self.unused = torch.nn.Linear(128, 64), torch.nn.Linear(128, 64)

    def forward(self, x):
        return self.used(x), self.unused(x)


def _inputs():
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(32, 128, generator=gen) for _ in range(3)]


def test_fisher_sensitivity_is_the_gradient_weighted_output_error():
    """Loss = sum_rows a . y_used (linear): the gradient at output channel o is a_o on every row, so
    F_o = rows x a_o^2 and the layer's score at group g is sum_o F_o (dW H dW^T)_oo, H the Hessian of
    the inputs; the layer the loss never sees scores 0 and keeps the coarsest groups."""
    torch.manual_seed(0)
    net, xs = _TwoHeads().eval(), _inputs()
    weight = net.used.weight.detach().clone()
    a = torch.randn(64)

    def calib(module):
        for x in xs:
            module(x)

    def loss_fn(module):
        for x in xs:
            used, _ = module(x.clone().requires_grad_(True))
            (used * a).sum().backward()

    report = quantize_model(net, dict(method="gptq", kernel="dequant", group_budget=4.375, sensitivity="fisher",
                                      include=("used", "unused")), calib, loss_fn=loss_fn)
    assert report.groups == {"used": 64, "unused": 128}
    assert all(e == 0.0 for e in report.sensitivity["unused"].values())
    assert report.calib_runs == 2 + 2  # the Fisher and Hessian runs, then one per layer (each its own block)
    assert all(p.requires_grad for p in net.parameters() if p.dtype.is_floating_point)
    acc = HessianAccumulator(128)
    for x in xs:
        acc.add(x)
    d = (net.used.dequantized_weight() - weight).double()  # the codes the allocation scored at 64
    rows = sum(x.shape[0] for x in xs)
    expected = float((((d @ acc.hessian.double()) * d).sum(1) * rows * a.double() ** 2).sum())
    assert report.sensitivity["used"][64] == pytest.approx(expected, rel=1e-6)


def test_fisher_needs_a_loss_and_teacher_forcing():
    net = _TwoHeads().eval()
    spec = dict(method="gptq", kernel="dequant", group_budget=4.5, sensitivity="fisher", include=("used", "unused"))
    with pytest.raises(ValueError, match="needs loss_fn"):
        quantize_model(net, spec, lambda m: m(torch.randn(4, 128)))
    with pytest.raises(ValueError, match="loss_fn is only used with group_budget and sensitivity='fisher'"):
        quantize_model(net, dict(spec, sensitivity="output"), lambda m: m(torch.randn(4, 128)), loss_fn=lambda m: None)
    with pytest.raises(RuntimeError, match="no gradient reached"):
        quantize_model(net, spec, lambda m: m(torch.randn(4, 128)), loss_fn=lambda m: m(torch.randn(4, 128)))
    with pytest.raises(ValueError, match="calib_mode='teacher_forced'"):
        quant_settings(dict(method="gptq", group_budget=4.5, sensitivity="fisher", calib_mode="greedy"))
    with pytest.raises(ValueError, match="sensitivity='hessian' is not one of"):
        quant_settings(dict(method="gptq", sensitivity="hessian"))


def test_fisher_budget_on_the_tiny_bevvlm(tiny_world):
    """The model-level path: the reference answers' loss is backpropagated frame by frame."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    from bevlm.inference.ptq import calibration_prefixes, quantize_bevvlm
    from tests.model_helpers import tiny_bevvlm_and_frames

    init_default_scope("bevlm")
    model, ds, _ = tiny_bevvlm_and_frames(tiny_world, encoder_layers=1)
    calib = calibration_prefixes(model, [pseudo_collate([ds[i]]) for i in range(2)], max_questions=4)
    report = quantize_bevvlm(model, dict(method="gptq", kernel="dequant", group_budget=4.5, sensitivity="fisher",
                                         group_choices=(16, 32, 64)), calib=calib)
    assert len(report.groups) == len(report.sensitivity) > 0
    assert report.calib_runs == 2 + model.llm.num_layers
    assert any(e > 0 for errs in report.sensitivity.values() for e in errs.values())
