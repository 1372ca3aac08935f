"""Evaluation on frozen features: pure functions (features in, accuracy out)."""

from stablerep.evaluation.features import extract_features, images_to_batch
from stablerep.evaluation.few_shot import FewShotResult, centroid_predict, few_shot
from stablerep.evaluation.knn import knn_accuracy, knn_predict
from stablerep.evaluation.linear_probe import ProbeResult, fit_logistic, lbfgs_probe, sgd_probe

__all__ = [
    "FewShotResult",
    "ProbeResult",
    "centroid_predict",
    "extract_features",
    "few_shot",
    "fit_logistic",
    "images_to_batch",
    "knn_accuracy",
    "knn_predict",
    "lbfgs_probe",
    "sgd_probe",
]
