"""FemurSegTraining: reproduce the reference method's cross-validated models (Deniz et al. 2018).

Shares networks, preprocessing and the model-folder contract with :mod:`FemurSegLib`, so training
and inference cannot drift.
"""
