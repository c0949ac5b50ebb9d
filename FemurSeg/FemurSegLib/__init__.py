"""FemurSegLib: the pure core of FemurSeg (no Slicer, no Qt; torch only where a function says so).

Modules
-------
errors         user-facing error types (one line, exit code 2 in the CLI)
io             image reading/writing with geometry (SimpleITK), atomic writes, overwrite guard
preprocessing  canonical orientation, resampling, intensity normalisation and their inverse
networks       UNet3D and UNet2D (PyTorch); imported only by training and the torch engine
engines        ONNX Runtime engine (default) and PyTorch engine (fallback)
inference      sliding window / whole volume / 2D nine-patch prediction, TTA, fold ensembling
postprocess    connected components, left/right femur split
metrics        DSC, precision, recall, specificity, HD95, ASSD, ROC AUC, AP, PR-optimal threshold
modelfolder    the model-folder contract: model.json card, checksums, lookup of bundled models
outputs        .seg.nrrd, label maps, STL surfaces, PNG report and volume JSON
phantom        seeded synthetic hip MR phantom with ground truth
cli            the `femurseg` command line
"""

__version__ = "0.1.0"
