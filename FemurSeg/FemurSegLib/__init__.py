"""FemurSegLib: the pure core of FemurSeg (no Slicer, no Qt; torch only where a function says so).

Modules
-------
errors         user-facing error types (one line, exit code 2 in the CLI), exit code 3 and the
               ``warning:`` prefix of an implausible result
files          the one atomic-write module (atomic_path, Staging, replace_folder), image file
               names, JSON reading and writing (NaN as null)
images         image reading/writing with geometry (SimpleITK), the one grid-equality check
specs          the typed ``input`` and ``inference`` sections of a model card
preprocessing  canonical orientation, resampling, intensity normalisation and their inverse
networks       UNet3D, UNet2D and UNet25D (PyTorch); imported only by training and the torch engine
engines        ONNX Runtime engine (default) and PyTorch engine (fallback)
inference      sliding window / whole volume / 2D nine-patch / 2.5D slice prediction, TTA, fold
               ensembling, the ROI cascade, Segmenter
postprocess    connected components, left/right femur split, label_probability (threshold and
               the card's post-processing: the one place a probability becomes a label map)
metrics        DSC, precision, recall, specificity, HD95, ASSD, ROC AUC, AP, PR-optimal threshold,
               the one mean/sd helper
plausibility   is a result plausible? femur volumes and the intensity fingerprint of the card
segments       segment names, colours, label values and terminology (right/left femur)
modelfolder    the model-folder contract: model.json card, checksums, lookup of bundled models
release        model files as release assets: downloaded once into the model cache, verified
outputplan     the outputs of ``femurseg segment``: named and checked before the model runs
batch          one input of ``femurseg segment`` (and of a cohort's case): checked, segmented
               and written all or nothing
cohort         ``femurseg cohort``: a whole cohort on a Dask cluster, resumable, one manifest row
               per case
truncation     does an image file hold all the voxel data its header describes?
uncertainty    the slices where the model is least certain (the report's slices to check)
writers        .seg.nrrd, label maps, probability maps, STL files
surface        closed, volume-preserving surfaces of masks and binary STL
montage        the PNG quality-control report and volumes JSON
phantom        seeded synthetic hip MR phantom with ground truth (a package: shapes, anatomy,
               calibration, rendering, build)
dicom          DICOM input: image series found in a folder tree, listed, chosen and read
dicomseg       DICOM Segmentation output (highdicom: the optional extra femurseg[dicom])
commandline    what both command lines share: one-line errors, exceptions to exit codes
cli            the `femurseg` command line
"""

__version__ = "0.1.0"
