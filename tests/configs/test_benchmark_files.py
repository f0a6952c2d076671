"""The benchmark variant files: every variant passes the variant check, the headline table's selection
names existing variants (the baseline first)."""
import os

import pytest
from mmengine.config import Config

from bevlm.inference.variants import check_variant
from tests.conftest import REPO

BENCH = os.path.join(REPO, "configs", "benchmarks")


@pytest.mark.parametrize("name", ["default.py", "headline.py"])
def test_every_variant_is_valid(name):
    variants = Config.fromfile(os.path.join(BENCH, name)).variants.to_dict()
    for key, spec in variants.items():
        check_variant(spec, key)


def test_headline_selection_names_variants_of_the_file():
    bench = Config.fromfile(os.path.join(BENCH, "headline.py"))
    assert bench.selection[0] == "baseline" and len(set(bench.selection)) == len(bench.selection)
    assert all(v in bench.variants for v in bench.selection)
