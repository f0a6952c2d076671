"""Efficient inference toolkit: quantisation, post-training quantisation of a BEVVLM,
self-speculative decoding, inference variants and teacher-forced fidelity.

Layering: this package sits above ``bevlm.models`` (it imports the model package, never the
reverse). What the model's own forward needs lives in the model layer: the QA format and
round policy (``bevlm.models.qa``), token pruning (``bevlm.models.pruning``) and the typed
``test_cfg`` (``bevlm.models.detectors.test_cfg``); the self-speculative decoder registers
itself in ``bevlm.registry.TASK_UTILS`` so a model builds it by name from ``test_cfg``. The
side-by-side benchmark runner is ``bevlm.engine.benchmark``. Sub-packages are imported where
used (``bevlm.inference.variants``, ``bevlm.inference.speculative``, ...).
"""
