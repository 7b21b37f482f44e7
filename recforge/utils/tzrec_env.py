"""TorchEasyRec's environment switches that recforge does not implement.

TorchEasyRec reads some choices from environment variables rather than from the config: the
feature naming and hashing of Alibaba's RTP serving, its export formats (AOT, TensorRT, input
tiling, distributed embedding) and the quantization of exported embeddings. A recforge run that
ignored one of these would train or export something other than what the user asked for, so
a command that TorchEasyRec would change refuses to start while one is switched on
(:func:`check_environment`), with one line naming the variable. Switches that only tune speed,
memory or file access (``ENABLE_TMA``, ``USE_INPLACE_TRUNC_NORMAL``,
``FORCE_LOAD_SHARDING_PLAN``, ``USE_FSSPEC``) or the sampler's internal id type
(``USE_HASH_NODE_ID``) change no result and are not checked.

A value switches a variable on where TorchEasyRec's reading of it would (mostly its first
character, as TorchEasyRec tests it).

Where we differ from TorchEasyRec: its export quantizes the pooled (EmbeddingBagCollection)
tables to INT8 unless ``QUANT_EMB`` starts with ``0``; recforge exports them in float32, as
trained, and refuses only an explicit request for quantized tables (``QUANT_EMB`` set to
anything but ``0`` or ``FP32``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Optional

from recforge.errors import RecforgeError

#: the commands that export a model (TorchEasyRec reads its export switches only there)
EXPORT_COMMANDS = frozenset({"export"})


@dataclass(frozen=True)
class Switch:
    """An environment variable of TorchEasyRec that recforge does not implement.

    Attributes:
        name: the variable.
        is_on: whether a value switches it on.
        off: the values that leave it off, for the message.
        meaning: what TorchEasyRec does when it is on.
        commands: the recforge commands it would change; None: every command.

    """

    name: str
    is_on: Callable[[str], bool]
    off: str
    meaning: str
    commands: Optional[frozenset[str]] = None


def _first_in(chars: str) -> Callable[[str], bool]:
    return lambda value: value[:1] in tuple(chars)


def _quantizes(value: str) -> bool:
    return value != "" and value[:1] != "0" and value.upper() != "FP32"


SWITCHES: tuple[Switch, ...] = (
    Switch(
        "USE_RTP",
        lambda value: value == "1",
        "unset or 0",
        "RTP serving mode: sequence features named '<sequence>_<feature>' instead of"
        " '<sequence>__<feature>', RTP's input parsing and export",
    ),
    Switch(
        "USE_FARM_HASH_TO_BUCKETIZE",
        lambda value: value.lower() == "true",
        "unset or false",
        "FarmHash Fingerprint64 for hash_bucket_size and zch ids (recforge hashes as the"
        " feature generator does by default, with std::hash)",
    ),
    Switch(
        "ONLINE_DENSE_EXPORT",
        lambda value: value == "1",
        "unset or 0",
        "periodic export of the dense parameters while training",
        frozenset({"train"}),
    ),
    Switch(
        "INPUT_TILE",
        _first_in("23"),
        "unset or 1",
        "an export that takes the user features once per request (input tiling)",
        EXPORT_COMMANDS,
    ),
    Switch(
        "INPUT_TILE_3_ONLINE",
        _first_in("1"),
        "unset or 0",
        "an input-tiled export for online serving only",
        EXPORT_COMMANDS,
    ),
    Switch(
        "USE_DISTRIBUTED_EMBEDDING",
        lambda value: value == "1",
        "unset or 0",
        "an export for EAS's distributed embedding",
        EXPORT_COMMANDS,
    ),
    Switch(
        "ENABLE_AOT",
        _first_in("12"),
        "unset or 0",
        "an AOTInductor export",
        EXPORT_COMMANDS,
    ),
    Switch(
        "UNIFIED_AOT",
        _first_in("1"),
        "unset or 0",
        "a unified AOTInductor export",
        EXPORT_COMMANDS,
    ),
    Switch(
        "ENABLE_TRT",
        _first_in("1"),
        "unset or 0",
        "a TensorRT export",
        EXPORT_COMMANDS,
    ),
    Switch(
        "QUANT_EMB",
        _quantizes,
        "unset, 0 or FP32",
        "exported embedding tables quantized to the named type",
        EXPORT_COMMANDS,
    ),
    Switch(
        "QUANT_EC_EMB",
        _quantizes,
        "unset, 0 or FP32",
        "exported sequence embedding tables quantized to the named type",
        EXPORT_COMMANDS,
    ),
    Switch(
        "DIST_QUANT",
        lambda value: value.strip().upper() not in ("", "0", "NONE"),
        "unset, 0 or NONE",
        "row-wise quantized distributed embedding exports",
        EXPORT_COMMANDS,
    ),
)


def environment_problem(command: str, environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """The message for the first switch that is on and would change ``command``, else None.

    Args:
        command: the recforge subcommand (``train``, ``export``, ...).
        environ: the environment to read.

    """
    for switch in SWITCHES:
        value = environ.get(switch.name)
        if value is None or not switch.is_on(value):
            continue
        if switch.commands is not None and command not in switch.commands:
            continue
        return (
            f"environment variable {switch.name}: expected {switch.off} (TorchEasyRec's"
            f" {switch.meaning}, which recforge does not implement), found {value!r}"
        )
    return None


def check_environment(command: str, environ: Mapping[str, str] = os.environ) -> None:
    """Refuses to run ``command`` while a TorchEasyRec switch that would change it is on.

    Raises:
        RecforgeError: the variable, the values that are accepted and the value found.

    """
    problem = environment_problem(command, environ)
    if problem is not None:
        raise RecforgeError(problem)
