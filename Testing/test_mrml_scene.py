"""FemurSegMRMLLib.scene on real MRML (slicer-core): the segmentation node from the core's
.seg.nrrd, the probability map node, the terminology."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk

from FemurSegLib import segments, writers  # noqa: E402
from FemurSegLib.errors import InputError  # noqa: E402
from slicer_helpers import (ellipsoids, export_labelmap, make_image, node_array, rotation, scene,
                            scene_nodes, SIZE, slicer, SLICER_MARKS, SPACING, stl, volume, volumes,
                            vtk, write_seg)  # noqa: F401,E402

pytestmark = SLICER_MARKS


# ----------------------------------------------------------------------------------------------
# Segmentation node from the core's .seg.nrrd


@pytest.mark.parametrize("split", [True, False])
def test_load_segmentation_names_colours_terminology_and_grid(scene, volume, tmp_path, split):
    labels = ellipsoids()
    specs = write_seg(tmp_path / "out.seg.nrrd", labels, split, volumes.volume_node_to_image(volume))
    seg_node = scene_nodes.load_segmentation(tmp_path / "out.seg.nrrd", scene, volume)

    assert seg_node.GetName() == "hip femur segmentation"
    segmentation = seg_node.GetSegmentation()
    assert scene_nodes.segment_ids(seg_node) == [s.segment_id for s in specs]
    terminology_logic = slicer.vtkSlicerTerminologiesModuleLogic()
    expected_modifiers = {"Right femur": ("24028007", "Right"), "Left femur": ("7771000", "Left"),
                          "Femur": ("", "")}
    for spec in specs:
        segment = segmentation.GetSegment(spec.segment_id)
        assert segment.GetName() == spec.name
        assert segment.GetLabelValue() == spec.value
        np.testing.assert_allclose(segment.GetColor(), spec.color, atol=1e-3)
        entry = slicer.vtkSlicerTerminologyEntry()
        assert terminology_logic.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
        assert entry.GetCategoryObject().GetCodeValue() == "123037004"
        assert entry.GetCategoryObject().GetCodingSchemeDesignator() == "SCT"
        assert entry.GetTypeObject().GetCodeValue() == "71341001"
        assert entry.GetTypeObject().GetCodeMeaning() == "Femur"
        modifier = entry.GetTypeModifierObject()
        assert (modifier.GetCodeValue() or "", modifier.GetCodeMeaning() or "") \
            == expected_modifiers[spec.name]

    # Reference geometry is the input volume's; the voxels come back exactly on its grid.
    assert seg_node.GetNodeReference(seg_node.GetReferenceImageGeometryReferenceRole()) is volume
    labelmap = export_labelmap(scene, seg_node, volume)
    np.testing.assert_allclose(volumes.ijk_to_ras(labelmap), volumes.ijk_to_ras(volume), rtol=0, atol=1e-9)
    exported = node_array(labelmap)
    assert exported.shape == labels.shape
    expected = labels if split else (labels > 0).astype(np.uint8)
    assert np.array_equal(exported > 0, expected > 0)
    for spec in specs:  # the exporter numbers segments 1, 2 in order, as the file does
        assert np.array_equal(exported == spec.value, expected == spec.value)

    # Shown in 3D: display node and closed surface, volume close to the voxels.
    assert seg_node.GetDisplayNode() is not None
    assert segmentation.ContainsRepresentation("Closed surface")
    voxel_mm3 = float(np.prod(SPACING))
    for spec in specs:
        assert scene_nodes.segment_voxel_volume_mm3(seg_node, spec.segment_id) == pytest.approx(
            np.count_nonzero(expected == spec.value) * voxel_mm3, rel=1e-9)


def test_load_segmentation_keeps_parent_transform_and_unique_names(scene, volume, tmp_path):
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "T")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    write_seg(tmp_path / "a.seg.nrrd", ellipsoids(), True, volumes.volume_node_to_image(volume))
    first = scene_nodes.load_segmentation(tmp_path / "a.seg.nrrd", scene, volume)
    second = scene_nodes.load_segmentation(tmp_path / "a.seg.nrrd", scene, volume)
    assert first.GetTransformNodeID() == transform.GetID() == second.GetTransformNodeID()
    assert first.GetName() == "hip femur segmentation"
    assert second.GetName() != first.GetName() and second.GetName().startswith(first.GetName())


def test_load_segmentation_refuses_another_grid(scene, volume, tmp_path):
    shifted = make_image(np.zeros(SIZE[::-1], np.int16), origin=(0.0, 0.0, 0.0))
    write_seg(tmp_path / "off.seg.nrrd", ellipsoids(), True, shifted)
    n_before = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    with pytest.raises(InputError, match=r"^segmentation file off\.seg\.nrrd is not on the input "
                                         r"volume's grid \(IJK-to-RAS differs\)$"):
        scene_nodes.load_segmentation(tmp_path / "off.seg.nrrd", scene, volume)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == n_before  # no leftover


def test_load_segmentation_with_an_empty_segment(scene, volume, tmp_path):
    labels = ellipsoids()
    labels[labels == 2] = 0  # "Left femur" written without voxels
    write_seg(tmp_path / "one.seg.nrrd", labels, True, volumes.volume_node_to_image(volume))
    seg_node = scene_nodes.load_segmentation(tmp_path / "one.seg.nrrd", scene, volume)
    assert scene_nodes.segment_voxel_volume_mm3(seg_node, "Left_femur") == 0.0
    assert scene_nodes.segment_voxel_volume_mm3(seg_node, "Right_femur") > 0
    files = stl.export_stl(seg_node, tmp_path / "stl")
    assert [f.name for f in files] == ["hip_femur_segmentation_Right_femur.stl"]


def test_load_segmentation_missing_file(scene, volume, tmp_path):
    with pytest.raises(InputError, match=r"^segmentation file not found: .*nothing\.seg\.nrrd$"):
        scene_nodes.load_segmentation(tmp_path / "nothing.seg.nrrd", scene, volume)


def test_converter_rules_are_registered_once():
    scene_nodes.register_segmentation_converter_rules()
    scene_nodes.register_segmentation_converter_rules()
    names = [r.GetClassName() for r in
             slicer.vtkSegmentationConverterFactory.GetInstance().GetConverterRules()]
    for rule in ("vtkBinaryLabelmapToClosedSurfaceConversionRule",
                 "vtkClosedSurfaceToBinaryLabelmapConversionRule"):
        assert names.count(rule) == 1


def transform_matrix(rotation_matrix: np.ndarray, translation) -> "vtk.vtkMatrix4x4":
    m = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            m.SetElement(r, c, rotation_matrix[r, c])
        m.SetElement(r, 3, float(translation[r]))
    return m


def test_segmentation_under_a_transformed_volume_keeps_the_exact_geometry(scene, volume,
                                                                           tmp_path):
    """A registered volume (non-identity parent transform): the segmentation's reference
    geometry is the volume's own IJK-to-RAS, not one with the transform baked in."""
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    transform.SetMatrixTransformToParent(transform_matrix(rotation(0.2, -0.4), (100, -20, 35)))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    labels = ellipsoids()
    write_seg(tmp_path / "t.seg.nrrd", labels, True, volumes.volume_node_to_image(volume))
    seg_node = scene_nodes.load_segmentation(tmp_path / "t.seg.nrrd", scene, volume)
    assert seg_node.GetTransformNodeID() == transform.GetID()
    own = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(own)
    expected = slicer.vtkSegmentationConverter.SerializeImageGeometry(own, volume.GetImageData())
    assert seg_node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()) == expected
    # Segment Editor works on the reference geometry: it holds the volume's voxels exactly.
    geometry = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(expected, geometry, False)
    np.testing.assert_allclose(volumes.image_to_world(geometry), volumes.ijk_to_ras(volume),
                               rtol=0, atol=1e-9)
    labelmap = export_labelmap(scene, seg_node, volume)
    np.testing.assert_array_equal(node_array(labelmap), labels)


# ----------------------------------------------------------------------------------------------
# Probability map


def test_load_probability_map(scene, volume, tmp_path):
    reference = volumes.volume_node_to_image(volume)
    prob = (np.arange(np.prod(SIZE)).reshape(SIZE[::-1]) / np.prod(SIZE)).astype(np.float32)
    image = make_image(prob)
    writers.write_probability(image, tmp_path / "p.nrrd")
    node = scene_nodes.load_probability_map(tmp_path / "p.nrrd", scene, volume)
    assert node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")
    assert node.GetName() == "hip femur probability"
    assert np.array_equal(node_array(node), prob)
    assert node_array(node).dtype == np.float32
    np.testing.assert_allclose(volumes.ijk_to_ras(node), volumes.ijk_to_ras(volume), rtol=0, atol=1e-12)
    display = node.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == pytest.approx((1.0, 0.5))
    assert sitk.GetArrayFromImage(reference).shape == prob.shape


def test_load_probability_map_refuses_another_grid(scene, volume, tmp_path):
    image = make_image(np.zeros((SIZE[2], SIZE[1], SIZE[0] + 1), np.float32))
    writers.write_probability(image, tmp_path / "p.nrrd")
    with pytest.raises(InputError, match=r"^probability map is not on the input volume's grid: "
                                         r"size \(49, 40, 14\) != \(48, 40, 14\)$"):
        scene_nodes.load_probability_map(tmp_path / "p.nrrd", scene, volume)


# ----------------------------------------------------------------------------------------------
# Terminology (issue 12: what a check against Slicer 5.8 and 5.10's sources found)


DICOM_MASTER_CONTEXT = "Segmentation category and type - DICOM master list"


def test_segments_name_the_terminology_context_that_holds_femur(scene, volume, tmp_path):
    """SNOMED CT 71341001 "Femur" is in Slicer's DICOM master list (not in the General Anatomy
    list): every segment's terminology entry names that context."""
    assert segments.TERMINOLOGY_CONTEXT == DICOM_MASTER_CONTEXT
    write_seg(tmp_path / "s.seg.nrrd", ellipsoids(), True, volumes.volume_node_to_image(volume))
    seg_node = scene_nodes.load_segmentation(tmp_path / "s.seg.nrrd", scene, volume)
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    for sid in scene_nodes.segment_ids(seg_node):
        entry = slicer.vtkSlicerTerminologyEntry()
        text = scene_nodes.segment_terminology(seg_node.GetSegmentation().GetSegment(sid))
        assert logic.DeserializeTerminologyEntry(text, entry)
        assert entry.GetTerminologyContextName() == DICOM_MASTER_CONTEXT
        assert entry.GetTypeObject().GetCodeValue() == "71341001"


SLICER_GIT_DIR = os.environ.get("FEMURSEG_SLICER_GIT_DIR", "")


@pytest.mark.parametrize("tag", ["v5.8.0", "v5.10.0"])
def test_femur_terminology_resolves_in_slicers_own_context_file(tmp_path, tag):
    import json

    """Against Slicer's own terminology file of each supported release (read from a Slicer git
    repository named by $FEMURSEG_SLICER_GIT_DIR): the context is the one that holds Femur in
    category Anatomical Structure, with Right and Left as its modifiers."""
    if not SLICER_GIT_DIR:
        pytest.skip("set FEMURSEG_SLICER_GIT_DIR to a Slicer git repository (with release tags)")
    path = ("Modules/Loadable/Terminologies/Resources/"
            "SegmentationCategoryTypeModifier-DICOM-Master.json")
    shown = subprocess.run(["git", f"--git-dir={SLICER_GIT_DIR}", "show", f"{tag}:{path}"],
                           capture_output=True, timeout=60)
    assert shown.returncode == 0, shown.stderr.decode()[-500:]
    (tmp_path / "context.json").write_bytes(shown.stdout)
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    name = logic.LoadTerminologyFromFile(str(tmp_path / "context.json"))
    assert name == segments.TERMINOLOGY_CONTEXT
    loaded = vtk.vtkStringArray()
    logic.GetLoadedTerminologyNames(loaded)
    assert [loaded.GetValue(i) for i in range(loaded.GetNumberOfValues())] == [name]
    from slicerio.segmentation import terminology_entry_to_string
    for spec in segments.femur_segments(True) + segments.femur_segments(False):
        entry = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(terminology_entry_to_string(spec.terminology),
                                                 entry)
        assert logic.UpdateEntryFromLoadedTerminologies(entry, [name], []), spec.name
    # The same, read from the file itself: the codes and the modifiers of the segments.
    context = json.loads(shown.stdout)
    femurs = [(category, kind) for category in context["SegmentationCodes"]["Category"]
              for kind in category.get("Type", []) if kind["CodeValue"] == "71341001"]
    assert len(femurs) == 1
    category, femur = femurs[0]
    code = lambda c: [c["CodingSchemeDesignator"], c["CodeValue"], c["CodeMeaning"]]  # noqa: E731
    assert code(category) == segments.CATEGORY_ANATOMICAL_STRUCTURE
    assert code(femur) == segments.TYPE_FEMUR
    modifiers = [code(m) for m in femur["Modifier"]]
    assert segments.MODIFIER_RIGHT in modifiers and segments.MODIFIER_LEFT in modifiers


class Slicer58Segment:
    """A segment as Slicer 5.8 has it: no GetTerminology/SetTerminology (added in 5.10)."""

    def __init__(self, segment):
        self._segment = segment

    def __getattr__(self, name):
        if name in ("GetTerminology", "SetTerminology", "HasTerminology"):
            raise AttributeError(f"vtkSegment has no attribute {name!r} in Slicer 5.8")
        return getattr(self._segment, name)


def test_segment_terminology_uses_the_tag_that_slicer_5_8_has(scene, volume, tmp_path):
    write_seg(tmp_path / "s.seg.nrrd", ellipsoids(), True, volumes.volume_node_to_image(volume))
    seg_node = scene_nodes.load_segmentation(tmp_path / "s.seg.nrrd", scene, volume)
    segment = seg_node.GetSegmentation().GetSegment("Right_femur")
    text = scene_nodes.segment_terminology(Slicer58Segment(segment))
    assert text == (f"{DICOM_MASTER_CONTEXT}~SCT^123037004^Anatomical Structure"
                    "~SCT^71341001^Femur~SCT^24028007^Right~~^^~^^")
    assert text == segment.GetTerminology()  # the same as 5.10's convenience method
    segment.RemoveTag(segment.GetTerminologyEntryTagName())
    assert scene_nodes.segment_terminology(Slicer58Segment(segment)) == ""
