"""The quantisation micro-benchmark runs end to end on a model its caller passes in."""
import inspect

import torch

from bevlm.inference.quantization import bench
from bevlm.models.llm import HFCausalLM
from bevlm.testing import TINY_LLAMA_CONFIG

torch.set_num_threads(1)


def test_bench_runs_on_the_callers_model_and_does_not_import_the_test_fixtures(capsys):
    assert "bevlm.testing" not in inspect.getsource(bench)
    torch.manual_seed(0)
    llm = HFCausalLM(tiny_config=dict(TINY_LLAMA_CONFIG, hidden_size=128, intermediate_size=256)).eval()
    bench.main(["--group-size", "64", "--prefix-len", "4", "--steps", "1", "--rounds", "1"], llm=llm)
    out = capsys.readouterr().out
    for name in ("fp32", "int4-dequant", "int8-dynamic"):
        assert any(line.startswith(name) for line in out.splitlines()), out
