"""Registries of the ``bevlm`` scope.

Every component is registered into one of these children of mmengine's root
registries, so configs can name it with ``type='Name'`` and
``default_scope='bevlm'``. ``locations`` lists the modules imported on first
build, so a config never needs ``custom_imports``.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry("model", parent=MMENGINE_MODELS, scope="bevlm",
                  locations=["bevlm.models"])
DATASETS = Registry("dataset", parent=MMENGINE_DATASETS, scope="bevlm",
                    locations=["bevlm.datasets"])
TRANSFORMS = Registry("transform", parent=MMENGINE_TRANSFORMS, scope="bevlm",
                      locations=["bevlm.datasets.transforms"])
METRICS = Registry("metric", parent=MMENGINE_METRICS, scope="bevlm",
                   locations=["bevlm.evaluation"])
EVALUATOR = Registry("evaluator", parent=MMENGINE_EVALUATOR, scope="bevlm",
                     locations=["bevlm.evaluation"])
HOOKS = Registry("hook", parent=MMENGINE_HOOKS, scope="bevlm",
                 locations=["bevlm.engine"])
OPTIM_WRAPPERS = Registry("optim_wrapper", parent=MMENGINE_OPTIM_WRAPPERS,
                          scope="bevlm", locations=["bevlm.engine"])
