"""stgnn_jax: the spatio-temporal GNN for Alzheimer's conversion prediction, in JAX/Flax.

Data -> batches -> model -> loss -> optimiser step -> metrics:
`data` (FC matrices, cohorts) -> `batching` (padded `SubjectBatch`) -> `model` (`GraphEncoder`,
`STGNN`, built from `layers` and `temporal`) -> `focal_jax.focal_loss` -> `training`.
"""

from stgnn_jax.batching import SubjectBatch, pack_subjects
from stgnn_jax.config import ModelConfig
from stgnn_jax.convert import params_from_torch, params_to_torch
from stgnn_jax.graphs import DenseGraphs, dense_graphs_from_jraph
from stgnn_jax.inference import apply_model, predict
from stgnn_jax.model import STGNN, GraphEncoder

__all__ = [
    "DenseGraphs",
    "GraphEncoder",
    "ModelConfig",
    "STGNN",
    "SubjectBatch",
    "apply_model",
    "dense_graphs_from_jraph",
    "pack_subjects",
    "params_from_torch",
    "params_to_torch",
    "predict",
]
