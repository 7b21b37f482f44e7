"""Which config fields recforge implements: the one table every field of the schema is in.

The schema is TorchEasyRec's, whole, so a config written for it always parses. Each field is
in exactly one class:

* ``IMPLEMENTED``: it does what TorchEasyRec documents.
* ``NOT_SUPPORTED``: setting it is a validation error (file, line, field path, "not supported
  yet"), never a silently different run.
* ``IGNORED``: it cannot change results here (an ODPS read option when reading parquet, a
  serving-side hint); setting it logs one warning per field per run.

Keys: ``"Message"`` classifies every field of a message; ``"Message.field"`` one field (it wins
over the message's entry); ``"Message.field=VALUE"`` one value of an enum field (values not
listed follow the field). ``tests/unit/test_support.py`` walks the whole descriptor pool and
fails on any field that is in no class.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from typing import NamedTuple, Optional

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

logger = logging.getLogger(__name__)


class Support(enum.Enum):
    """The class of a config field."""

    IMPLEMENTED = "implemented"
    NOT_SUPPORTED = "not supported yet"
    IGNORED = "ignored"


class Entry(NamedTuple):
    """A field's class and, for the other two classes, why (shown to the user)."""

    support: Support
    reason: str = ""


_YES = Entry(Support.IMPLEMENTED)


def _no(reason: str) -> Entry:
    return Entry(Support.NOT_SUPPORTED, reason)


def _ignored(reason: str) -> Entry:
    return Entry(Support.IGNORED, reason)


_FG_SEQ_KIND = _no(
    "this kind is not built yet as a sequence_ feature (its elements would be several values)"
    " nor as an element of a sequence_feature"
)
#: fields of the combo / lookup / match / expr messages recforge does not build (or ignores)
_DERIVED_FIELDS: dict[str, Entry] = {
    "zch": _no("zch is built for id, combo, custom and bool_mask features only"),
    "dynamicemb": _no("dynamic embedding tables (dynamicemb) are not built yet; zch is"),
    "vocab_file": _YES,
    "asset_dir": _YES,
    "stub_type": _YES,
    "autodis": _YES,
    "mlp": _YES,
    "fg_value_type": _ignored("a speed hint for TorchEasyRec's feature generation"),
}
_MAP_FIELDS = " zch dynamicemb vocab_file asset_dir stub_type autodis mlp fg_value_type"
_MODEL = _no("this model is not in recforge's zoo yet")
_GENERATIVE = _no("this generative (HSTU / semantic-id) part is not built yet")
_SAMPLER = _no("tdm_sampler (TDM's tree sampler) is not built yet")
_DYNAMIC_EMB = _no("dynamic embedding tables (dynamicemb) are not built yet; zch is")
_ODPS_ONLY = _ignored("an ODPS/MaxCompute read option; recforge reads parquet and csv")
_CUDA_ONLY = _ignored("a CUDA numerics switch; recforge exports and predicts on the CPU")

# Every field of these messages (unless a field entry below says otherwise).
MESSAGES: dict[str, Entry] = {
    # the pipeline and the parts recforge builds
    **dict.fromkeys(
        (
            "EasyRecConfig DataConfig Field FeatureConfig IdFeature RawFeature SequenceFeature"
            " SeqFeatureConfig FeatureGroupConfig ModelConfig CustomModel TrainConfig EvalConfig"
            " ExportConfig GradClipping NegativeSampler ParameterConstraints"
            " NegativeSamplerV2 HardNegativeSampler HardNegativeSamplerV2"
            " SparseOptimizer DenseOptimizer FusedSGDOptimizer FusedAdagradOptimizer"
            " FusedAdamOptimizer FusedRowWiseAdagradOptimizer SGDOptimizer AdagradOptimizer"
            " AdamOptimizer AdamWOptimizer ConstantLR ExponentialDecayLR ManualStepLR"
            " FusedLarsSGDOptimizer FusedLAMBOptimizer FusedPartialRowWiseLAMBOptimizer"
            " FusedPartialRowWiseAdamOptimizer FusedAdadeltaOptimizer FusedRMSpropOptimizer"
            " AdadeltaOptimizer RMSpropOptimizer CosineAnnealingLR CosineAnnealingWarmRestartsLR"
            " PartOptimizer"
            " LossConfig BinaryCrossEntropy SoftmaxCrossEntropy L2Loss JRCLoss BinaryFocalLoss"
            " MetricConfig TrainMetricConfig AUC MulticlassAUC RecallAtK MeanAbsoluteError"
            " MeanSquaredError Accuracy GroupedAUC XAUC NormalizedEntropy"
            " MLP Tower DINTower TaskTower BayesTaskTower ExtractionNetwork Cross CrossV2 CIN"
            " EMAConfig GradScaler MaskBlock MaskNetModule DeepFM MultiTower MultiTowerDIN"
            " MaskNet WideAndDeep DCNV1 DCNV2 xDeepFM DLRM SimpleMultiTask MMoE PLE DBMTL DSSM"
            " DSSMV2 PEPNet WuKong WuKongLayer RocketLaunching DC2VR InterventionTaskTower"
            " VariationalDropout"
            " MIND MINDUserTower B2ICapsule"
            " DAT DATTower"
        ).split(),
        _YES,
    ),
    # dense embeddings of number features (recforge/modules/dense_embedding.py)
    **dict.fromkeys(("AutoDisEmbedding MLPEmbedding").split(), _YES),
    # feature generation kinds recforge computes (recforge/features/*_feature.py)
    **dict.fromkeys(
        (
            "ComboFeature LookupFeature MatchFeature ExprFeature OverlapFeature TokenizeFeature"
            " TextNormalizer CustomFeature KvDotProduct BoolMaskFeature CombineFeature"
        ).split(),
        _YES,
    ),
    # sequence groups and encoders inside DEEP feature groups
    **dict.fromkeys(
        (
            "SeqGroupConfig SeqEncoderConfig DINEncoder SimpleAttention PoolingEncoder"
            " MultiWindowDINEncoder SelfAttentionEncoder"
        ).split(),
        _YES,
    ),
    **dict.fromkeys(
        ("TDM MultiWindowDINTower ContrastiveConfig").split(),
        _MODEL,
    ),
    # HSTU retrieval (recforge/models/hstu_match.py, recforge/modules/gr/)
    **dict.fromkeys(
        (
            "HSTUMatch HSTUUserTower HSTU STU GRInputPreprocessor GRUIHPreprocessor"
            " GRPositionalEncoder GROutputPostprocessor GRL2NormPostprocessor"
            " GRLayerNormPostprocessor GRActionEncoder GRSimpleActionEncoder"
            " GRContextualizedMLP GRSimpleContextualizedMLP"
        ).split(),
        _YES,
    ),
    # DLRM-HSTU ranking (recforge/models/dlrm_hstu.py, modules/gr/hstu_transducer.py):
    # several candidates per row with jagged labels, newest-first histories reversed
    **dict.fromkeys(
        (
            "DlrmHSTU UltraHSTU FusionMTLTower FusionSubTaskConfig GRContextualPreprocessor"
            " GRContentEncoder GRSliceContentEncoder GRPadContentEncoder GRMLPContentEncoder"
            " GRContextualInterleavePreprocessor GRTimestampLayerNormPostprocessor"
            " GRParameterizedContextualizedMLP"
        ).split(),
        _YES,
    ),
    **dict.fromkeys(
        (
            "SidRqvae SidRqkmeans SidReconLoss"
            " SidCommitmentLoss SidContrastiveLoss SidCandidateOutputConfig SinkhornConfig"
            " FaissKmeansConfig"
        ).split(),
        _GENERATIVE,
    ),
    "TDMSampler": _SAMPLER,
    "EarlyStopping": _YES,  # recforge extension (train_config.early_stopping)
    # recforge extension metrics (MetricConfig numbers 50-53)
    **dict.fromkeys("GroupedNDCG GroupedMRR Calibration CalibrationError".split(), _YES),
    "GroupedXAUC": _YES,
    **dict.fromkeys(
        "DynamicEmbedding DynamicEmbInitializerArgs DynamicEmbFrequencyAdmissionStrategy".split(),
        _DYNAMIC_EMB,
    ),
    # zch on id features (recforge.modules.zch); the other kinds' zch fields stay refused
    **dict.fromkeys(
        (
            "ZeroCollisionHash LRU_EvictionPolicy LFU_EvictionPolicy DistanceLFU_EvictionPolicy"
        ).split(),
        _YES,
    ),
    "DeltaEmbeddingDumpConfig": _no("delta embedding dumps are not built yet"),
    "FeatureStoreConfig": _no("feature-store uploads are not built yet"),
}

# Single fields; these win over their message's entry.
FIELDS: dict[str, Entry] = {
    # data
    "DataConfig.fg_threads": _ignored("recforge's feature generation is vectorised per batch"),
    "DataConfig.is_orderby_partition": _ODPS_ONLY,
    "DataConfig.odps_data_quota_name": _ODPS_ONLY,
    "DataConfig.odps_data_compression": _ODPS_ONLY,
    "DataConfig.in_order": _ignored("recforge always returns batches in reading order"),
    # recforge always keeps one data group: sampled negatives are rows appended to the batch
    # with empty user features, which is what force_base_data_group: true asks TorchEasyRec for
    "DataConfig.force_base_data_group": _YES,
    "DataConfig.sample_cost_field": _no("cost-based batching is not built yet"),
    "DataConfig.batch_cost_size": _no("cost-based batching is not built yet"),
    "DataConfig.input_fields_str": _no("use input_fields"),
    "DataConfig.tdm_sampler": _SAMPLER,
    "DataConfig.dataset_type=OdpsDatasetV1": _no("MaxCompute is not available in recforge"),
    "DataConfig.dataset_type=KafkaDataset": _no("Kafka input is not built yet"),
    **{
        f"Field.input_type={kind}_{element}": _no("only scalar input_type values are read")
        for kind in ("ARRAY", "ARRAY_ARRAY")
        for element in ("INT32", "INT64", "STRING", "FLOAT", "DOUBLE")
    },
    **{
        f"Field.input_type=MAP_{key}_{value}": _no("only scalar input_type values are read")
        for key in ("STRING", "INT64", "INT32")
        for value in ("INT32", "INT64", "STRING", "FLOAT", "DOUBLE")
    },
    "FeatureGroupConfig.group_type=JAGGED_SEQUENCE": _YES,
    "NegativeSampler.item_id_delim": _no("multi-id items in the sampler table are not built yet"),
    # features: every FG kind is built, with its sequence_ variant and as an element of a
    # sequence_feature, except these
    "FeatureConfig.sequence_tokenize_feature": _YES,
    "SeqFeatureConfig.tokenize_feature": _YES,
    **{
        f"SeqFeatureConfig.{kind}": _FG_SEQ_KIND
        for kind in ("overlap_feature custom_feature kv_dot_product").split()
    },
    **{
        f"{feature}.{name}": entry
        for feature in (
            "OverlapFeature TokenizeFeature CustomFeature KvDotProduct BoolMaskFeature"
            " CombineFeature"
        ).split()
        for name, entry in (("stub_type", _YES),)
    },
    **{
        f"{feature}.sequence_fields": _ignored("a serving-side hint for feature generation")
        for feature in ("TokenizeFeature", "CombineFeature")
    },
    "TokenizeFeature.sequence_delim": _YES,
    **{
        f"{feature}.{name}": _YES
        for feature in "OverlapFeature CustomFeature KvDotProduct CombineFeature".split()
        for name in ("autodis", "mlp")
    },
    **{f"{feature}.dynamicemb": _DYNAMIC_EMB for feature in ("CustomFeature", "BoolMaskFeature")},
    # their id output is an id_feature with the same zch (recforge.modules.zch)
    **{f"{feature}.zch": _YES for feature in ("ComboFeature", "CustomFeature", "BoolMaskFeature")},
    "BoolMaskFeature.fg_value_type": _ignored("a speed hint for TorchEasyRec's feature generation"),
    "CustomFeature.is_op_thread_safe": _ignored(
        "recforge's operators run in one thread per worker"
    ),
    "KvDotProduct.kv_delimiter": _no(
        "a float in the schema, so no delimiter can be given; recforge always uses ':'"
    ),
    **{
        f"{feature}.{name}": entry
        for feature in ("IdFeature", "RawFeature")
        for name, entry in (
            ("stub_type", _YES),
            ("sequence_fields", _ignored("a serving-side hint for feature generation")),
        )
    },
    **{
        f"{feature}.{name}": entry
        for feature, names in (
            ("ComboFeature", "dynamicemb vocab_file asset_dir stub_type"),
            ("LookupFeature", _MAP_FIELDS),
            ("MatchFeature", _MAP_FIELDS),
            ("ExprFeature", "stub_type autodis mlp"),
        )
        for name, entry in _DERIVED_FIELDS.items()
        if name in names.split()
    },
    "IdFeature.weighted": _YES,
    "IdFeature.zch": _YES,
    "IdFeature.dynamicemb": _DYNAMIC_EMB,
    "IdFeature.fg_value_type": _ignored("a speed hint for TorchEasyRec's feature generation"),
    "SequenceFeature.sequence_pk": _ignored(
        "the serving side's sequence key (only written to fg.json)"
    ),
    "FeatureGroupConfig.embedding_name_suffix": _YES,
    "SeqGroupConfig.embedding_name_suffix": _YES,
    # model
    **{f"ModelConfig.{name}": _MODEL for name in ("tdm".split())},
    **{f"ModelConfig.{name}": _GENERATIVE for name in "sid_rqvae sid_rqkmeans".split()},
    "ModelConfig.hstu_match": _YES,
    "ModelConfig.dlrm_hstu": _YES,
    # ULTRA-HSTU (recforge/models/ultra_hstu.py): dlrm_hstu with one transducer per channel
    "ModelConfig.ultra_hstu": _YES,
    # the history's actions added to its rows, one learned row for the candidates
    # (recforge/modules/gr/hstu_transducer.py)
    "GRContextualPreprocessor.action_encoder": _YES,
    "GRContextualPreprocessor.action_mlp": _YES,
    "FusionSubTaskConfig.task_bitmask": _YES,
    "FusionSubTaskConfig.train_metrics": _YES,
    **dict.fromkeys(
        ("DlrmHSTU.enable_global_average_loss", "UltraHSTU.enable_global_average_loss"),
        _ignored(
            "recforge averages the loss over each process's samples (the same on one process)"
        ),
    ),
    # HSTU: what the STU layers and hstu_match do not build yet
    "STU.sort_by_length": _ignored("a speed switch of TorchEasyRec's fused GPU kernels"),
    # rematerialization (torch.utils.checkpoint), semi-local attention and mid-stack
    # truncation: recforge/modules/gr/stu.py, attention.py, truncation.py
    **dict.fromkeys(
        (
            "STU.recompute_normed_x STU.recompute_uvqk STU.recompute_y STU.sla_k1 STU.sla_k2"
            " HSTU.attn_truncation_split_layer HSTU.attn_truncation_tail_len"
        ).split(),
        _YES,
    ),
    # accepted when it restates the 'contextual' group's token count (from_config.py)
    "STU.contextual_seq_len": _YES,
    # dlrm_hstu / ultra_hstu (recforge/modules/gr/contextualized_mlp.py); hstu_match's
    # uih_preprocessor refuses it (recforge/modules/gr/hstu_encoder.py)
    "GRContextualizedMLP.parameterized_mlp": _YES,
    # dlrm_hstu's (hstu_match refuses it: its towers read the history alone)
    "GRInputPreprocessor.contextual_preprocessor": _YES,
    "GRInputPreprocessor.contextual_interleave_preprocessor": _YES,
    # dlrm_hstu / ultra_hstu: the candidates' timestamps; hstu_match: each event's
    "GROutputPostprocessor.timestamp_layernorm_postprocessor": _YES,
    "HSTUMatch.similarity=EUCLID": _no("EUCLID similarity is not built yet"),
    "ModelConfig.embedding_l2_regularization": _YES,  # recforge extension
    # TRITON and CUTLASS run the PyTorch attention, with a warning (recforge/modules/gr/kernel.py)
    "ModelConfig.kernel": _YES,
    # a tower's own train metrics (recforge/models/multi_task_rank.py)
    **dict.fromkeys(
        (
            f"{tower}.train_metrics"
            for tower in ("TaskTower", "BayesTaskTower", "InterventionTaskTower")
        ),
        _YES,
    ),
    # TorchEasyRec 1.3.16 documents it but its VariationalDropout layer never reads it
    "VariationalDropout.embedding_wise_variational_dropout": _ignored(
        "TorchEasyRec's variational dropout is feature-wise whatever it says"
    ),
    "DSSM.similarity=EUCLID": _no("EUCLID similarity is not built yet"),
    "DSSMV2.similarity=EUCLID": _no("EUCLID similarity is not built yet"),
    "MIND.similarity=EUCLID": _no("EUCLID similarity is not built yet"),
    "DAT.similarity=EUCLID": _no("EUCLID similarity is not built yet"),
    # TorchEasyRec 1.3.16's MIND never reads it (user features join each interest by concat)
    "MINDUserTower.user_seq_combine": _ignored("TorchEasyRec's MIND does not read it either"),
    # TorchEasyRec computes EUCLID for it (its docs list it as a third measure)
    "RocketLaunching.feature_distillation_function=INNER_PRODUCT": _no(
        "feature distillation measures COSINE or EUCLID"
    ),
    "LossConfig.recon_loss": _GENERATIVE,
    "LossConfig.commitment_loss": _GENERATIVE,
    "LossConfig.contrastive_loss": _GENERATIVE,
    # training
    "TrainConfig.save_checkpoints_timestamp_interval": _no("timed checkpoints are not built yet"),
    "TrainConfig.save_checkpoints_timestamps": _no("timed checkpoints are not built yet"),
    "TrainConfig.save_checkpoints_timestamp_quorum": _no("timed checkpoints are not built yet"),
    "TrainConfig.delta_embedding_dump_config": _no("delta embedding dumps are not built yet"),
    "TrainConfig.tensorboard_summaries": _ignored("recforge writes loss, lr and metric summaries"),
    # the exported MLPs in that dtype (recforge/config/export_precision.py)
    "ExportConfig.mixed_precision": _YES,
    "ExportConfig.cudnn_allow_tf32": _CUDA_ONLY,
    "ExportConfig.cuda_matmul_allow_tf32": _CUDA_ONLY,
}


def message_key(desc: Descriptor) -> str:
    """A message's key in the table: its name inside the package (``Outer.Inner`` if nested)."""
    return desc.full_name.split(".", 2)[-1]


def field_support(fd: FieldDescriptor, enum_value: Optional[str] = None) -> Optional[Entry]:
    """The class of a field (of one of its enum values, when given); None if unclassified."""
    key = f"{message_key(fd.containing_type)}.{fd.name}"
    if enum_value is not None and f"{key}={enum_value}" in FIELDS:
        return FIELDS[f"{key}={enum_value}"]
    return FIELDS.get(key) or MESSAGES.get(message_key(fd.containing_type))


def set_fields(message: Message, path: str = "") -> Iterator[tuple[str, FieldDescriptor, object]]:
    """Every set field of a config, depth first: ``(field path, descriptor, value)``.

    Repeated fields yield one entry per element (``feature_configs[2]``); map fields yield the
    map itself and are not walked into.
    """
    for fd, value in message.ListFields():
        fpath = f"{path}.{fd.name}" if path else fd.name
        is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
        if fd.is_repeated and not is_map:
            for i, item in enumerate(value):
                yield f"{fpath}[{i}]", fd, item
                if fd.message_type is not None:
                    yield from set_fields(item, f"{fpath}[{i}]")
            continue
        yield fpath, fd, value
        if fd.message_type is not None and not is_map:
            yield from set_fields(value, fpath)


_warned: set[str] = set()


def check_support(config: Message) -> list[tuple[str, str]]:
    """Finds the set fields recforge does not support; warns once per run about ignored ones.

    Args:
        config: an ``EasyRecConfig`` (or any message of the schema).

    Returns:
        ``(field path, message)`` for each set field that is not supported yet (nothing
        inside such a field is reported again).

    """
    problems: list[tuple[str, str]] = []
    blocked: list[str] = []
    for path, fd, value in set_fields(config):
        if any(path.startswith(b + ".") or path.startswith(b + "[") for b in blocked):
            continue
        enum_value = None
        if fd.enum_type is not None and not fd.is_repeated:
            enum_value = fd.enum_type.values_by_number[value].name
        entry = field_support(fd, enum_value)
        if entry is None or entry.support is Support.IMPLEMENTED:
            continue
        shown = f"{fd.name}: {enum_value}" if enum_value is not None else fd.name
        if entry.support is Support.NOT_SUPPORTED:
            problems.append((path, f"{shown} is not supported yet ({entry.reason})"))
            blocked.append(path)
        else:
            key = f"{message_key(fd.containing_type)}.{fd.name}"
            if key not in _warned:
                _warned.add(key)
                logger.warning("%s is ignored: %s", path, entry.reason)
    return problems
