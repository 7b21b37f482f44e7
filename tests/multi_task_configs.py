"""Test configs of multi-task models: ``{class name: model_config body}`` (see test_models.py)."""

MULTI_TASK_MODEL_CONFIGS: dict = {}
