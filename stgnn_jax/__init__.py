"""stgnn_jax: the spatio-temporal GNN for Alzheimer's conversion prediction, in JAX/Flax.

The packages follow the pipeline:

- `data`: FC matrices -> thresholded graphs and cohorts (`load_cohort` reads the reference's
  on-disk format; `synthetic` builds cohorts with a known signal);
- `input_pipeline`: cohorts -> padded `SubjectBatch`es and the cross-validation folds;
- `nn`: the graph encoder and the temporal classifier, `STGNN`;
- `train`: `focal_jax.focal_loss` -> the jitted `train_step` -> the cross-validated loop;
- `eval`: metrics, reports and the classical baselines;
- `torch_interop`: the reference's PyTorch state dicts <-> Flax params (depends on `nn`, never
  the reverse).

`config` declares every setting once; `train.py` builds its flags from it.
"""

from stgnn_jax.config import ModelConfig
from stgnn_jax.inference import apply_model, predict
from stgnn_jax.input_pipeline import SubjectBatch, pack_subjects
from stgnn_jax.nn.graphs import DenseGraphs, dense_graphs_from_jraph
from stgnn_jax.nn.model import STGNN, GraphEncoder
from stgnn_jax.torch_interop.convert import params_from_torch, params_to_torch

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
