"""MIND with several interests vs one interest vs DSSM on planted multi-interest data.

Data (:func:`tests.helpers.planted.planted_tables`): ``--clusters`` item clusters of
``--items_per_cluster`` items; each of ``--users`` users is interested in 2 or 3 distinct
clusters; each of its 16 rows has a history of 6 items mixing all of its clusters and a target
item from one of them. Users are read from their history only (every user id hashes to one
bucket), so a model must infer the interests from the behaviours. Evaluation:
``evaluate_retrieval`` over all items, a user's relevant items being all of its targets (2 or
3 clusters' worth).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time

from recforge.retrieval import evaluate_retrieval
from recforge.train import train_and_evaluate
from tests.helpers.planted import dssm_model, mind_model, planted_tables, write_planted_run

MODELS = ("mind_k3", "mind_k1", "dssm")


def model_config(model: str, dim: int) -> str:
    """The ``model_config`` body of ``mind_k<K>`` or ``dssm``, embeddings ``dim`` wide."""
    if model == "dssm":
        return dssm_model(dim)
    return mind_model(int(model.removeprefix("mind_k")), dim)


def run(args: argparse.Namespace, model: str, seed: int) -> dict:
    """Trains and evaluates one model on the planted data of ``seed``."""
    rows, items = planted_tables(
        args.users, args.clusters, args.items_per_cluster, (2, 3), 16, 6, seed=seed
    )
    with tempfile.TemporaryDirectory() as work:
        config = write_planted_run(
            work, model_config(model, args.dim), rows, items, args.steps, user_ids=False
        )
        start = time.perf_counter()
        train_and_evaluate(config)
        train_s = time.perf_counter() - start
        metrics = evaluate_retrieval(f"{work}/model/pipeline.config", top_k=[10, 20])
    return {"model": model, "seed": seed, "train_s": round(train_s, 1), **metrics}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``planted`` subcommand's options."""
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--seeds", default="0", help="comma-separated data seeds")
    parser.add_argument("--users", type=int, default=48)
    parser.add_argument("--clusters", type=int, default=12)
    parser.add_argument("--items_per_cluster", type=int, default=6)
    parser.add_argument("--dim", type=int, default=8, help="embedding width (output_dim)")
    parser.add_argument("--steps", type=int, default=1000, help="training steps (batch 32)")


def main(args: argparse.Namespace) -> int:
    """Runs every model on every seed and prints one JSON line each."""
    logging.disable(logging.WARNING)
    for seed in (int(s) for s in args.seeds.split(",")):
        for model in args.models.split(","):
            result = run(args, model.strip(), seed)
            print(json.dumps({k: v for k, v in result.items() if "hit" not in k}), flush=True)
    return 0
