"""History-only frames (streamed by a subsampled test split for the temporal BEV) reach the metrics
unanswered: every metric and writer skips them instead of scoring or failing on them."""
import pytest

from bevlm.evaluation import DriveLMMetric, EfficiencyMetric, NuScenesDetMetric, PlanningMetric
from bevlm.structures import DriveDataSample, is_history_only, scored_samples


def _history(as_dict: bool):
    s = DriveDataSample()
    s.set_metainfo({"token": "t", "scene_token": "s", "history_only": True})
    return s.to_dict() if as_dict else s


@pytest.mark.parametrize("as_dict", [True, False])
def test_the_helpers_read_both_forms(as_dict):
    scored = DriveDataSample()
    scored.set_metainfo({"token": "u", "scene_token": "s"})
    scored = scored.to_dict() if as_dict else scored
    assert is_history_only(_history(as_dict)) and not is_history_only(scored)
    assert scored_samples([_history(as_dict), scored]) == [scored]


@pytest.mark.parametrize("metric", [DriveLMMetric(), PlanningMetric(), EfficiencyMetric(),
                                    NuScenesDetMetric(data_root="unused", version="v1.0-mini")])
def test_every_metric_skips_history_only_samples(metric):
    # a history-only sample has no answers, trajectory, efficiency or boxes: processing it would fail
    metric.process(None, [_history(True), _history(True)])
    assert metric.results == []
