"""MRML side of the FemurSeg Slicer module: everything that touches the scene but not Qt.

This package runs inside 3D Slicer and, for the tests, with Kitware's Qt-free ``slicer-core``
wheel. It imports ``slicer`` (MRML classes only), ``vtk``, ``numpy``, ``SimpleITK`` and the pure
core ``FemurSegLib``; the scene, the Python executable and the paths are passed in (nothing
global), so the same code serves the widget, the module logic and the tests. One job per module:

* :mod:`.volumes` - volume node <-> ``SimpleITK`` image, and the temporary input file;
* :mod:`.process` - the background process: start, progress lines, one-line errors, cancel;
* :mod:`.job` - the options of a run, its command line, its files and its results;
* :mod:`.scene` - the segmentation node, the probability map node, the terminology;
* :mod:`.stl` - STL export of the femur surfaces;
* :mod:`.install` - the Python packages inference needs, and their installation;
* :mod:`.models` - the model list of the module panel, and the download of a model folder
  that holds only its card (:class:`.models.ModelDownload`).

The flow of one segmentation (:func:`.job.segment_volume` does all of it and waits)::

    job = prepare_job(volume_node, python=..., module_dir=..., options=JobOptions(...))
    run_command(job.command, env=job.env, cwd=job.cwd, on_progress=...)
    result = finish_job(job, scene)          # segmentation node, probability node, STL files
    job.cleanup()

Importing this package has no side effects on Slicer (the segmentation converter rules are
registered on first use, see :func:`.scene.register_segmentation_converter_rules`).
"""
