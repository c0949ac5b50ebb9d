"""FemurSegLib: the pure core of FemurSeg (no Slicer, no Qt; torch only where a function says so).

Modules
-------
errors         user-facing error types (one line, exit code 2 in the CLI)
images         image reading/writing with geometry (SimpleITK)
files          atomic writes with an overwrite guard, JSON
preprocessing  canonical orientation, resampling, intensity normalisation and their inverse
networks       UNet3D, UNet2D and UNet25D (PyTorch); imported only by training and the torch engine
engines        ONNX Runtime engine (default) and PyTorch engine (fallback)
inference      sliding window / whole volume / 2D nine-patch prediction, TTA, fold ensembling
postprocess    connected components, left/right femur split
metrics        DSC, precision, recall, specificity, HD95, ASSD, ROC AUC, AP, PR-optimal threshold
modelfolder    the model-folder contract: model.json card, checksums, lookup of bundled models
release        model files as release assets: downloaded once into the model cache, verified
writers        .seg.nrrd, label maps, probability maps, STL files
surface        closed, volume-preserving surfaces of masks and binary STL
montage        the PNG quality-control report and volumes JSON
phantom        seeded synthetic hip MR phantom with ground truth (a package: shapes, anatomy,
               calibration, rendering, build)
dicom          DICOM input: image series found in a folder tree, listed, chosen and read
dicomseg       DICOM Segmentation output (highdicom: the optional extra femurseg[dicom])
cli            the `femurseg` command line
"""

__version__ = "0.1.0"
