"""Retrieval through the CLI: DSSM on the planted-signal demo, full-corpus evaluation against
the popularity baseline, tower export reproduced in a fresh process, and bad-input errors."""

import os

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from recforge.config import load_pipeline_config
from recforge.datasets.data_parser import DataParser
from recforge.demo.retrieval import generate_retrieval_demo_data
from recforge.export import restore_model
from recforge.utils.checkpoint import latest_checkpoint
from tests.helpers.cli_util import edits, example, read_json, run_cli
from tests.helpers.scripted import run_scripted_in_fresh_process

MODEL_DIR = "experiments/dssm_demo"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """examples/dssm_demo.config trained on the demo data, evaluated and exported."""
    workdir = tmp_path_factory.mktemp("dssm_demo")
    generate_retrieval_demo_data(str(workdir / "data" / "retrieval_demo"))
    run_cli(["train", "--config", example("dssm_demo.config")], str(workdir))
    config = os.path.join(MODEL_DIR, "pipeline.config")
    proc = run_cli(["evaluate-retrieval", "--config", config, "--exclude_train"], str(workdir))
    run_cli(["export", "--config", config, "--export_dir", "export"], str(workdir))
    return workdir, proc


def test_dssm_demo_recall_far_above_popularity(demo_run):
    workdir, proc = demo_run
    result = read_json(str(workdir / MODEL_DIR / "retrieval_result.json"))
    assert result["num_users"] == 2000 and result["num_items"] == 2000
    assert result["exclude_train"] is True
    for k in (10, 50, 100):
        # one held-out item per user: recall@K equals hit-rate@K
        assert result[f"recall@{k}"] == pytest.approx(result[f"hit_rate@{k}"])
    assert result["recall@10"] <= result["recall@50"] <= result["recall@100"]
    assert result["recall@50"] >= 2 * result["popularity_recall@50"]
    assert result["recall@50"] >= 0.25
    assert '"recall@50"' in proc.stdout


def test_exported_towers_reproduce_eager_embeddings(demo_run, tmp_path):
    workdir, _ = demo_run
    export_dir = workdir / "export"
    for side in ("user", "item"):
        assert sorted(os.listdir(export_dir / side)) == [
            "fg.json",
            "model_info.json",
            "pipeline.config",
            "scripted_model.pt",
        ]
        info = read_json(str(export_dir / side / "model_info.json"))
        assert info["outputs"] == [{"name": f"{side}_emb", "dtype": "float32", "shape": ["B", 32]}]
    config = load_pipeline_config(str(workdir / MODEL_DIR / "pipeline.config"))
    model, _ = restore_model(config, latest_checkpoint(str(workdir / MODEL_DIR)))
    rows = pq.read_table(workdir / "data" / "retrieval_demo" / "eval.parquet").slice(0, 300)
    rb = rows.to_batches()[0]
    with torch.no_grad():
        eager = model.predict(DataParser(model._features).parse_batch(rb))
    for side in ("user", "item"):
        parsed = DataParser(model.tower_features(side)).parse(rb)
        scripted = run_scripted_in_fresh_process(
            str(export_dir / side / "scripted_model.pt"), parsed, str(tmp_path)
        )
        # cosine similarity: the exported embeddings are L2-normalised
        expected = F.normalize(eager[f"{side}_emb"], dim=-1)
        torch.testing.assert_close(scripted[f"{side}_emb"], expected, atol=1e-5, rtol=0)
        assert expected.std(dim=0).min() > 0  # depends on the features


def test_evaluate_retrieval_without_exclusion_and_faiss(demo_run):
    workdir, _ = demo_run
    config = os.path.join(MODEL_DIR, "pipeline.config")
    run_cli(["evaluate-retrieval", "--config", config, "--top_k", "5,20"], str(workdir))
    plain = read_json(str(workdir / MODEL_DIR / "retrieval_result.json"))
    assert plain["exclude_train"] is False and set(plain) >= {"recall@5", "hit_rate@20"}
    try:
        import faiss  # noqa: F401
    except ImportError:
        proc = run_cli(
            ["evaluate-retrieval", "--config", config, "--backend", "faiss"],
            str(workdir),
            check=False,
        )
        assert proc.returncode == 2 and "faiss-cpu" in proc.stderr
        return
    run_cli(
        ["evaluate-retrieval", "--config", config, "--top_k", "5,20", "--backend", "faiss"],
        str(workdir),
    )
    with_faiss = read_json(str(workdir / MODEL_DIR / "retrieval_result.json"))
    assert with_faiss["recall@20"] == pytest.approx(plain["recall@20"], abs=0.002)


def _train_fails(workdir, config_path, *extra):
    proc = run_cli(["train", "--config", config_path, *extra], str(workdir), check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc.stderr


def test_bad_retrieval_input_exits_2_with_a_clear_message(demo_run, tmp_path):
    workdir, _ = demo_run
    config = example("dssm_demo.config")
    out = ["--model_dir", str(tmp_path / "m")]
    # the item table lacks the id field
    err = _train_fails(
        workdir, config, *out, *edits(data_config__negative_sampler__item_id_field="sku")
    )
    assert "no item id column 'sku'" in err and "items.parquet" in err
    # more negatives per batch than items
    err = _train_fails(
        workdir, config, *out, *edits(data_config__negative_sampler__num_sample=2001)
    )
    assert "num_sample (2001) is larger than the item table" in err and "2000 items" in err
    # towers of different widths
    with open(config) as f:
        text = f.read()
    text = text.replace("output_dim: 32", "output_dim: 0")
    item = text.rindex("hidden_units: [64, 32]")
    text = text[:item] + "hidden_units: [64, 16]" + text[item + len("hidden_units: [64, 32]") :]
    bad = tmp_path / "dims.config"
    bad.write_text(text)
    err = _train_fails(workdir, str(bad), *out)
    assert "user tower outputs 32 values and the item tower 16" in err
