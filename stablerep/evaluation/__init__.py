"""Evaluation on frozen features: datasets x encoders x protocols (linear probe, kNN, few-shot,
zero-shot), one path for the CLI, the Prefect task and the demo (:func:`run_evaluation`)."""

from stablerep.evaluation.encoders import Encoder, load_encoder
from stablerep.evaluation.features import FeatureCache, SplitFeatures, encode_split
from stablerep.evaluation.few_shot import FewShotResult, centroid_predict, few_shot
from stablerep.evaluation.knn import knn_accuracy, knn_predict
from stablerep.evaluation.linear_probe import ProbeResult, fit_logistic, lbfgs_probe, sgd_probe
from stablerep.evaluation.metrics import score
from stablerep.evaluation.suite import EvalSuite, load_suite, run_evaluation
from stablerep.evaluation.transforms import EvalTransform

__all__ = [
    "Encoder",
    "EvalSuite",
    "EvalTransform",
    "FeatureCache",
    "FewShotResult",
    "ProbeResult",
    "SplitFeatures",
    "centroid_predict",
    "encode_split",
    "few_shot",
    "fit_logistic",
    "knn_accuracy",
    "knn_predict",
    "lbfgs_probe",
    "load_encoder",
    "load_suite",
    "run_evaluation",
    "score",
    "sgd_probe",
]
