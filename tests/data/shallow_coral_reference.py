"""Checks deep-coral's shallow CORAL on real features against NumPy/SciPy and scikit-learn, for
tests/shallow_coral.rs.

Usage: python shallow_coral_reference.py IN.safetensors OUT.json

IN: `source`, `target` (the preprocessed features, float64), `source_labels`, `target_labels`
(int64), `transformed` (deep-coral's CORAL-transformed source), `c` (the SVM cost, 1 value).
OUT (JSON): `transform_rel_diff`, the largest |deep-coral - reference| / max |reference| of the
transform, the reference computed as AAAI 2016's Algorithm 1 with SciPy's `sqrtm`
(C_S = cov(D_S) + I, C_T = cov(D_T) + I, D_S C_S^(-1/2) C_T^(1/2)); and the target accuracy of
scikit-learn's `LinearSVC` (squared hinge, dual, one-vs-rest, C = c) trained on the source
features as they are (`svm_acc`) and transformed (`coral_acc`).
"""
import json
import sys

import numpy as np
import scipy.linalg
from safetensors.numpy import load_file
from sklearn.svm import LinearSVC

d = load_file(sys.argv[1])
ds, dt = d["source"], d["target"]
ys, yt = d["source_labels"], d["target_labels"]
c = float(d["c"][0])

cs = np.cov(ds, rowvar=False) + np.eye(ds.shape[1])
ct = np.cov(dt, rowvar=False) + np.eye(dt.shape[1])
whiten = np.real(scipy.linalg.inv(scipy.linalg.sqrtm(cs)))
colour = np.real(scipy.linalg.sqrtm(ct))
reference = ds @ whiten @ colour
rel = float(np.abs(d["transformed"] - reference).max() / np.abs(reference).max())


def accuracy(train):
    svm = LinearSVC(C=c, loss="squared_hinge", dual=True, tol=1e-4, max_iter=1000, random_state=0)
    return float(svm.fit(train, ys).score(dt, yt))


json.dump({"transform_rel_diff": rel, "svm_acc": accuracy(ds), "coral_acc": accuracy(reference)},
          open(sys.argv[2], "w"))
print("ok")
