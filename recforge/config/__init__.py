"""Loading, saving, editing and validating pipeline configs.

A pipeline config is one :class:`~recforge.protos.pipeline_pb2.EasyRecConfig` message, written in
protobuf text format (``.config``, ``.pbtxt``, ``.txt``, ``.prototxt``), JSON (``.json``, both
``lowerCamel`` and ``snake_case`` field names) or YAML (``.yaml``, ``.yml``; the JSON mapping).

Every problem is reported as a :class:`ConfigError` that says where (file, line, column and the
dotted field path) and what was expected, with a "did you mean" suggestion where one exists::

    examples/x.config:12:5: model_config.feature_groups[1].feature_names[0]: feature 'usr' is not
    defined; did you mean 'user'? (defined: user, item, ...)

Example:
    >>> from recforge.config import load_pipeline_config, validate_config, which_msg
    >>> config = load_pipeline_config("tests/configs/frappe_deepfm.config")
    >>> validate_config(config, "tests/configs/frappe_deepfm.config")
    >>> which_msg(config.model_config, "model")
    'DeepFM'

Relative paths inside a config (``train_input_path``, ``model_dir``, ...) are never resolved
against the config file's folder: they stay relative to the current directory, as in
TorchEasyRec.

The modules: :mod:`~recforge.config.errors` (the error type), :mod:`~recforge.config.loader`
(files in and out), :mod:`~recforge.config.editing` (overrides), :mod:`~recforge.config.oneofs`
(which member is set), :mod:`~recforge.config.validation` (checks beyond the schema) and
:mod:`~recforge.config.columns` (the data columns a config reads).

"""

from recforge.config._util import JSON_EXTENSIONS, YAML_EXTENSIONS, PathLike
from recforge.config.columns import check_data_columns, required_columns
from recforge.config.editing import edit_config
from recforge.config.errors import ConfigError
from recforge.config.loader import config_to_dict, load_pipeline_config, save_pipeline_config
from recforge.config.oneofs import which_msg, which_oneof_field
from recforge.config.validation import validate_config

__all__ = [
    "JSON_EXTENSIONS",
    "YAML_EXTENSIONS",
    "ConfigError",
    "PathLike",
    "check_data_columns",
    "config_to_dict",
    "edit_config",
    "load_pipeline_config",
    "required_columns",
    "save_pipeline_config",
    "validate_config",
    "which_msg",
    "which_oneof_field",
]
