"""The big-tables benchmark runs the committed criteo-synth config with bigger tables, and the
harness reads anonymous vs file-mapped memory. Timing-free."""

import os
from pathlib import Path

import pytest

from benchmarks import big_tables, criteo_synth
from benchmarks.harness import _rss_split_kb
from recforge.config import edit_config, load_pipeline_config
from tests.helpers.paths import REPO_ROOT


def test_big_columns_are_the_largest_vocabularies_raised():
    base = criteo_synth.vocab_sizes()
    big = big_tables.big_columns(5)
    vocabs = big_tables.vocabs_for(4_000_000, 5)
    assert len(big) == 5 and min(base[j] for j in big) >= max(
        v for j, v in enumerate(base) if j not in big
    )
    assert [vocabs[j] for j in big] == [4_000_000] * 5
    assert [v for j, v in enumerate(vocabs) if j not in big] == [
        v for j, v in enumerate(base) if j not in big
    ]


@pytest.mark.parametrize("files", [False, True])
def test_edits_apply_to_the_committed_config(files):
    vocabs = big_tables.vocabs_for(4_000_000, 5)
    big = big_tables.big_columns(5)
    edits = big_tables.edits_for(Path("/data"), vocabs, big, 3, files)
    config = load_pipeline_config(os.path.join(REPO_ROOT, criteo_synth.CONFIG))
    edited = edit_config(config, edits)
    buckets = {
        f.id_feature.feature_name: f.id_feature.num_buckets
        for f in edited.feature_configs
        if f.HasField("id_feature")
    }
    assert sorted(name for name, n in buckets.items() if n == 4_000_000) == sorted(
        f"C{j + 1}" for j in big
    )
    assert edited.train_input_path == "/data/train_0.parquet"
    assert edited.train_config.embedding_file_dir == ("emb_files" if files else "")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_rss_split_reads_this_process():
    anon, mapped = _rss_split_kb(os.getpid())
    assert anon > 0 and mapped > 0  # the interpreter's heap; its mapped libraries
    assert _rss_split_kb(2**22 + 12345) == (0, 0)  # no such process
