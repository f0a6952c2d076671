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
# Test-time components built by name from a model's ``test_cfg`` (frame decoders). The model
# layer names them without importing them: implementations above it (the self-speculative
# decoder of ``bevlm.inference.speculative``) register themselves here, and ``locations``
# imports them on first build.
from mmengine.registry import TASK_UTILS as MMENGINE_TASK_UTILS  # noqa: E402

TASK_UTILS = Registry("task util", parent=MMENGINE_TASK_UTILS, scope="bevlm",
                      locations=["bevlm.models.qa", "bevlm.inference.speculative"])

# Children of the remaining mmengine registries, so that building them under the "bevlm"
# scope finds them here (and mmengine does not warn that the scope is missing).
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS  # noqa: E402
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS  # noqa: E402
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS  # noqa: E402
from mmengine.registry import LOOPS as MMENGINE_LOOPS  # noqa: E402
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS  # noqa: E402
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS  # noqa: E402
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS  # noqa: E402
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS  # noqa: E402

OPTIMIZERS = Registry("optimizer", parent=MMENGINE_OPTIMIZERS, scope="bevlm")
PARAM_SCHEDULERS = Registry("parameter scheduler", parent=MMENGINE_PARAM_SCHEDULERS, scope="bevlm")
LOOPS = Registry("loop", parent=MMENGINE_LOOPS, scope="bevlm")
DATA_SAMPLERS = Registry("data sampler", parent=MMENGINE_DATA_SAMPLERS, scope="bevlm")
FUNCTIONS = Registry("function", parent=MMENGINE_FUNCTIONS, scope="bevlm")
LOG_PROCESSORS = Registry("log_processor", parent=MMENGINE_LOG_PROCESSORS, scope="bevlm")
VISUALIZERS = Registry("visualizer", parent=MMENGINE_VISUALIZERS, scope="bevlm")
VISBACKENDS = Registry("vis_backend", parent=MMENGINE_VISBACKENDS, scope="bevlm")
