"""Seeded synthetic phantom of a coronal T1-weighted hip MR scan, with ground-truth labels.

The phantom imitates the development data (``shared/data/hip-mri-t1``): a bilateral coronal
turbo-spin-echo scan, 384 x 384 voxels of 0.911 mm in-plane, 5.2 mm slices, orientation LIP (index
i toward patient Left, j toward Inferior, k toward Posterior), slightly oblique, int16 grey values
of roughly 0..1300, and a label map with 1 femur (both sides), 2 ilium (with acetabulum and
ischium), 3 lumbar spine and 4 sacrum. The pubis is bone in the image but not labelled, as in the
real masks.

How it is built
---------------
* The anatomy is a set of implicit shapes in physical millimetres, in a patient frame centred
  between the femoral heads (x toward Left, y toward Posterior, z toward Superior). Seeded
  parameters vary sizes, angles (neck-shaft angle, anteversion, cup inclination) and positions
  within ranges measured on the real scans; see :func:`sample_parameters`.
* Each voxel gets the *partial-volume fraction* of every shape: the voxel box (and a small in-plane
  point-spread function) is integrated analytically against the locally linearised implicit
  function, which equals supersampling with infinitely many samples for a planar edge. Thick
  slices therefore blur edges along the slice direction just as a 5.2 mm slice profile does, and a
  coarse grid shows the same anatomy at lower resolution. Labels are the voxel-centre inclusion
  (fraction above one half), like per-slice manual masks. As in the real masks, the femur label is
  the bone inside its dark cortical band: it ends 1.5 mm into the thick shaft cortex (5-6.5 mm)
  and at most 40% into the thin cortex of the head and neck.
* Grey values are composed front to back: air, subcutaneous fat, muscle with striation, fat
  planes between anatomically placed muscles and thinner septa within them, pelvic and abdominal
  contents, the hip joint capsule and the gluteal tendons, bones with a dark cortex (thick on the
  shaft and the calcar) around finely textured marrow (brighter in the greater trochanter, darker
  down the shaft, with a faint physeal scar). The image is then multiplied by a bias field whose
  coil shading is solved for so that the femoral marrow sits at the real scans' level relative to
  the 99.5th percentile, given Rician noise correlated between neighbours like an interpolated
  reconstruction, cut to the barrel-shaped field of view that geometric distortion correction
  leaves (zero corners), and stored as int16.

The package
-----------
* :mod:`.shapes`: implicit shapes (signed-distance-like functions in millimetres) and rotations.
* :mod:`.anatomy`: femurs, hip bones, sacrum, lumbar spine, body outline, pelvic cavity and the
  muscle axes, all in the patient frame; label and tissue codes.
* :mod:`.calibration`: the parameters drawn per seed and the constants measured on the real scans
  (the calibration table is in its docstring).
* :mod:`.rendering`: the voxel grid, partial-volume painting front to back, textures, the bias
  field, reconstructed noise and the field-of-view mask.
* :mod:`.build`: :func:`make_phantom` and :func:`write_phantom` (grid geometry, assembly, int16).

Everything is drawn from ``numpy.random.default_rng(seed)``: equal seeds give bitwise equal arrays.
"""

from .anatomy import BACKGROUND, FEMUR, ILIUM, LABEL_NAMES, SACRUM, SPINE, TISSUES
from .build import DEFAULT_SIZE, DEFAULT_SPACING, LIP_DIRECTION, Phantom, make_phantom, write_phantom
from .calibration import sample_parameters, tissue_values

__all__ = [
    "BACKGROUND", "FEMUR", "ILIUM", "SPINE", "SACRUM", "LABEL_NAMES", "TISSUES",
    "DEFAULT_SIZE", "DEFAULT_SPACING", "LIP_DIRECTION", "Phantom", "make_phantom", "write_phantom",
    "sample_parameters", "tissue_values",
]
