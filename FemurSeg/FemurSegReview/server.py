"""The review web app: Slicer's MRML scene, slice and 3D views and Segment Editor effects
(through Kitware's trame-slicer) drawn in the browser.

Only this module imports trame; it is loaded when ``femurseg review`` starts a server. The
browser never names a file: the image and segmentation were read from the command line, and
saving writes only the session's fixed targets (:mod:`FemurSegReview.session`).
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from FemurSegLib.errors import FemurSegError

from .session import ReviewSession

#: The effects the page offers (Slicer's own Segment Editor effects through trame-slicer).
EFFECTS = ("none", "paint", "erase", "scissors", "smoothing")
#: trame-slicer's coronal slice view (its layout tag).
CORONAL_VIEW = "Green"
#: Cookie that carries the one-time token after the first request that named it.
TOKEN_COOKIE = "femurseg_review_token"


def _hex(color) -> str:
    return "#" + "".join(f"{int(round(255 * max(0.0, min(1.0, float(c))))):02x}" for c in color)


def token_middleware(token: Optional[str], allowed_hosts: Optional[set]):
    """aiohttp middleware: every request (page, assets, websocket) needs the one-time token,
    as ``?token=`` or the cookie set by the first request that carried it; with
    ``allowed_hosts`` the Host header must be one of them (no DNS rebinding onto 127.0.0.1)."""
    from aiohttp import web

    @web.middleware
    async def check(request, handler):
        if allowed_hosts is not None and request.url.host not in allowed_hosts:
            return web.Response(status=403, text="forbidden: unexpected Host header\n")
        if token is None:
            return await handler(request)
        given = request.query.get("token")
        cookie = request.cookies.get(TOKEN_COOKIE)
        if given is not None and secrets.compare_digest(given, token):
            response = await handler(request)
            if not getattr(response, "prepared", False):  # a finished websocket: no headers
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
            return response
        if cookie is not None and secrets.compare_digest(cookie, token):
            return await handler(request)
        return web.Response(status=403, text="forbidden: this review needs the token printed "
                                             "by femurseg review\n")

    return check


class ReviewApp:
    """One review: the scene, the page and its callbacks."""

    def __init__(self, session: ReviewSession, *, segmenter_factory: Optional[Callable] = None,
                 token: Optional[str] = None, allowed_hosts: Optional[set] = None):
        from trame.app import get_server
        from trame_slicer import module as trame_slicer_module
        from trame_slicer.core import LayoutManager, SlicerApp
        from trame_slicer.rca_view import register_rca_factories
        from undo_stack import UndoStack

        self.session = session
        self.segmenter_factory = segmenter_factory
        self.server = get_server(name=f"femurseg-review-{id(self)}", client_type="vue3")
        self.server.enable_module(trame_slicer_module)
        self.state = self.server.state
        self.slicer = SlicerApp()
        register_rca_factories(self.slicer.view_manager, self.server)
        self.editor = self.slicer.segmentation_editor
        self.undo_stack = UndoStack(undo_limit=30)
        self.editor.set_undo_stack(self.undo_stack)
        self.layout_manager = LayoutManager(self.slicer.scene, self.slicer.view_manager,
                                            self.server)
        self.layout_manager.register_layout_dict(LayoutManager.default_grid_configuration())
        self.layout_manager.set_layout("Quad View")
        self.volume = self.slicer.io_manager.load_volumes([str(session.image_path)])[0]
        self.volume.SetName(session.case)
        self.slicer.display_manager.show_volume_in_slice_background(self.volume)
        self.segmentation_node = None
        self._tmp = tempfile.TemporaryDirectory(prefix="femurseg-review-")
        if session.segmentation_path is not None:
            self._load_segmentation(session.segmentation_path)
        self.server.controller.on_server_bind.add(
            lambda wslink: wslink.app.middlewares.append(token_middleware(token,
                                                                          allowed_hosts)))
        self._init_state()
        self._build_page()
        self.undo_stack.can_undo_changed.connect(lambda v: self._set(can_undo=bool(v)))
        self.undo_stack.can_redo_changed.connect(lambda v: self._set(can_redo=bool(v)))
        self.state.change("effect")(self._on_effect)
        self.state.change("brush_size")(self._on_brush_size)
        self.state.change("window", "level")(self._on_window_level)
        self.server.controller.on_client_connected.add(self._on_client)

    # ------------------------------------------------------------------------------------------
    # scene

    def _load_segmentation(self, path: Path) -> None:
        if self.segmentation_node is not None:
            self.slicer.scene.RemoveNode(self.segmentation_node)
        node = self.slicer.io_manager.load_segmentation(str(path))
        if node is None:
            raise FemurSegError(f"Slicer could not read the segmentation {path.name}")
        node.SetName(f"{self.session.case} segmentation")
        self.segmentation_node = node
        self.editor.set_active_segmentation(node, self.volume)
        self.editor.show_3d(True)
        display = node.GetDisplayNode()
        display.SetOpacity2DFill(0.5)
        display.SetOpacity2DOutline(1.0)

    def _segment_ids(self) -> dict:
        """MRML segment ID of each of the session's segments (by ID, else by name)."""
        segmentation = self.segmentation_node.GetSegmentation()
        found = {}
        for spec in self.session.segments:
            sid = spec.segment_id if segmentation.GetSegment(spec.segment_id) else \
                segmentation.GetSegmentIdBySegmentName(spec.name)
            if sid:
                found[spec.value] = sid
        return found

    def edited_labels(self) -> np.ndarray:
        """The segmentation as it is now, as a ``[k, j, i]`` label array on the image grid."""
        import slicer
        from vtkmodules.util.numpy_support import vtk_to_numpy
        from vtkmodules.vtkCommonCore import vtkStringArray

        logic = self.slicer.segmentations_logic
        labels = np.zeros(tuple(reversed(self.session.image.GetSize())), dtype=np.uint8)
        for value, sid in self._segment_ids().items():
            node = self.slicer.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
            try:
                ids = vtkStringArray()
                ids.InsertNextValue(sid)
                ok = logic.ExportSegmentsToLabelmapNode(
                    self.segmentation_node, ids, node, self.volume,
                    slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
                if not ok:
                    raise FemurSegError(f"Slicer could not export segment {sid}")
                data = node.GetImageData()
                dims = data.GetDimensions()
                array = vtk_to_numpy(data.GetPointData().GetScalars()).reshape(dims[::-1])
                if array.shape != labels.shape:
                    raise FemurSegError(f"exported segment {sid} has shape {array.shape}, not "
                                        f"the image grid {labels.shape}")
                labels[array > 0] = value
            finally:
                self.slicer.scene.RemoveNode(node)
        return labels

    def reset_views(self, **_) -> None:
        self.slicer.display_manager.reset_views()

    def _on_client(self, **_) -> None:
        """Fit the views once the browser has given them their size (the first fit also
        centres the slices; later ones keep the slice the user went to)."""
        loop = asyncio.get_event_loop()
        for n, delay in enumerate((0.5, 1.5, 3.0)):
            loop.call_later(delay, self._reset_and_push, n > 0)

    def _reset_and_push(self, keep_slices: bool) -> None:
        keep_slices = keep_slices or self.state.current_slice >= 0  # the user went to one
        views = self.slicer.view_manager.get_slice_views()
        kept = [(view, view.get_slice_value()) for view in views] if keep_slices else []
        self.reset_views()
        for view, value in kept:
            view.set_slice_value(value)
        self._set(views_reset=self.state.views_reset + 1)

    def jump_to_slice(self, index) -> None:
        lps = self.session.slice_point_lps(int(index))
        ras = (-lps[0], -lps[1], lps[2])
        for view in self.slicer.view_manager.get_slice_views():
            node = view.get_view_node()
            # the coronal view ("Green"); on an oblique image its orientation reads "Reformat"
            if node is not None and view.get_singleton_tag() == CORONAL_VIEW:
                node.JumpSliceByOffsetting(*ras)
        self._set(current_slice=int(index))

    # ------------------------------------------------------------------------------------------
    # state and callbacks

    def _set(self, **values) -> None:
        with self.state:
            for key, value in values.items():
                self.state[key] = value

    def _segments_state(self) -> list:
        return [{"id": s.segment_id, "value": s.value, "name": s.name, "color": _hex(s.color),
                 "visible": True, "opacity": 0.5} for s in self.session.segments]

    def _slices_state(self) -> list:
        letter = self.session.slice_letter
        return [{"index": s.index, "text": f"{letter} = {s.index}",
                 "detail": f"{100 * s.uncertain_share:.0f}% of {s.candidates} voxels uncertain"
                           + (f", {100 * s.disagree_share:.0f}% flip disagreement"
                              if s.disagree_share else "")}
                for s in self.session.slices_to_check()]

    def _init_state(self) -> None:
        display = self.volume.GetDisplayNode()
        lo, hi = self.volume.GetImageData().GetScalarRange()
        self.state.update({
            "trame__title": f"FemurSeg Review - {self.session.case}",
            "case_name": self.session.case,
            "has_segmentation": self.segmentation_node is not None,
            "can_run_model": self.segmentation_node is None and self.segmenter_factory is not None,
            "running": False, "progress": 0, "progress_text": "",
            "warnings": list(self.session.warnings),
            "segments": self._segments_state(),
            "active_segment": self.session.segments[0].segment_id if self.session.segments else "",
            "effect": "none", "brush_size": 5.0, "can_undo": False, "can_redo": False,
            "window": float(display.GetWindow()), "level": float(display.GetLevel()),
            "range_lo": float(lo), "range_hi": float(hi),
            "slices": self._slices_state(), "current_slice": -1,
            "slices_note": "" if self.session.probability is not None else
            "no probability map: run the model here, or give --probabilities",
            "save_status": "", "save_error": "", "saves": 0, "views_reset": 0,
            "output_dir": str(self.session.output_dir),
        })

    def _on_effect(self, effect, **_) -> None:
        from trame_slicer.segmentation import (SegmentationEffectErase, SegmentationEffectNoTool,
                                               SegmentationEffectPaint,
                                               SegmentationEffectScissors,
                                               SegmentationEffectSmoothing)

        kinds = {"none": SegmentationEffectNoTool, "paint": SegmentationEffectPaint,
                 "erase": SegmentationEffectErase, "scissors": SegmentationEffectScissors,
                 "smoothing": SegmentationEffectSmoothing}
        if effect not in kinds or self.segmentation_node is None:
            return
        active = self.editor.set_active_effect_type(kinds[effect])
        if effect in ("paint", "erase", "smoothing"):
            self._on_brush_size(self.state.brush_size)
        if effect == "smoothing" and active is not None:
            active.set_kernel_size(self.smoothing_kernel_mm())

    def _on_brush_size(self, brush_size, **_) -> None:
        from trame_slicer.segmentation.paint_effect_parameters import BrushDiameterMode

        effect = self.editor.active_effect
        if effect is not None and hasattr(effect, "set_brush_diameter"):
            effect.set_brush_diameter(float(brush_size), BrushDiameterMode.ScreenRelative)

    def _on_window_level(self, window, level, **_) -> None:
        from trame_slicer.core.volume_window_level import VolumeWindowLevel

        VolumeWindowLevel.set_volume_node_window_level(self.volume, float(window), float(level))

    def select_segment(self, segment_id) -> None:
        if segment_id in self._segment_ids().values():
            self.editor.set_active_segment_id(segment_id)
            self._set(active_segment=segment_id)

    def set_visibility(self, segment_id, visible) -> None:
        display = self.segmentation_node.GetDisplayNode() if self.segmentation_node else None
        if display is None or segment_id not in self._segment_ids().values():
            return
        display.SetSegmentVisibility(segment_id, bool(visible))
        self._update_segment(segment_id, visible=bool(visible))

    def set_opacity(self, segment_id, opacity) -> None:
        display = self.segmentation_node.GetDisplayNode() if self.segmentation_node else None
        if display is None or segment_id not in self._segment_ids().values():
            return
        opacity = max(0.0, min(1.0, float(opacity)))
        display.SetSegmentOpacity2DFill(segment_id, opacity)
        display.SetSegmentOpacity3D(segment_id, opacity if opacity > 0 else 0.0)
        self._update_segment(segment_id, opacity=opacity)

    def _update_segment(self, segment_id, **values) -> None:
        segments = [dict(s, **values) if s["id"] == segment_id else s
                    for s in self.state.segments]
        self._set(segments=segments)

    def smoothing_kernel_mm(self) -> float:
        """Slicer's default median kernel (3 mm), but at least 3 in-plane voxels."""
        return max(3.0, 3.0 * min(self.session.image.GetSpacing()))

    def smooth_segment(self) -> None:
        """Median smoothing of the whole active segment (:meth:`smoothing_kernel_mm`):
        Slicer's Smoothing effect."""
        from trame_slicer.segmentation import SegmentationEffectSmoothing

        if self.segmentation_node is None:
            return
        effect = self.editor.set_active_effect_type(SegmentationEffectSmoothing)
        effect.set_kernel_size(self.smoothing_kernel_mm())
        effect.apply_smoothing()
        self._set(effect="smoothing")

    def undo(self) -> None:
        if self.undo_stack.can_undo():
            self.undo_stack.undo()

    def redo(self) -> None:
        if self.undo_stack.can_redo():
            self.undo_stack.redo()

    def save(self) -> None:
        if self.segmentation_node is None:
            self._set(save_error="error: nothing to save yet", save_status="")
            return
        try:
            written = self.session.save(self.edited_labels())
        except FemurSegError as exc:
            self._set(save_error=f"error: {exc}", save_status="")
            return
        from FemurSegLib.writers import segment_volumes

        volumes = ", ".join(f"{v['name']} {v['volume_ml']:.1f} ml"
                            for v in segment_volumes(self.session.labelmap,
                                                     self.session.segments))
        self._set(save_status=f"saved {len(written)} files to {self.session.output_dir}: "
                              f"{volumes}", save_error="", saves=self.session.saves)
        print(f"saved: {', '.join(str(p) for p in written)}", flush=True)

    async def run_model(self) -> None:
        """Run the model on the image (the same Segmenter path as `femurseg segment`)."""
        if self.segmenter_factory is None or self.state.running or self.segmentation_node:
            return
        loop = asyncio.get_running_loop()
        self._set(running=True, progress=0, progress_text="loading the model")

        def progress(fraction: float, message: str) -> None:
            loop.call_soon_threadsafe(lambda: self._set(progress=round(100 * fraction),
                                                        progress_text=message))

        def work():
            segmenter = self.segmenter_factory()
            result = segmenter.segment(self.session.image, progress=progress, keep_passes=True)
            problems, cause = segmenter.plausibility(self.session.image, result)
            return result, problems, cause

        try:
            result, problems, cause = await loop.run_in_executor(None, work)
        except FemurSegError as exc:
            self._set(running=False, progress_text=f"error: {exc}")
            return
        import SimpleITK as sitk

        from FemurSegLib.plausibility import warning_line
        from FemurSegLib.writers import write_seg_nrrd

        warnings = [warning_line(self.session.image_path.name, problems, cause)] if problems \
            else []
        self.session.use_result(result.labelmap, result.segments,
                                sitk.GetArrayFromImage(result.probability), warnings,
                                plain=result.plain_probability,
                                flipped=result.flipped_probability,
                                threshold=float(result.threshold))
        model_file = Path(self._tmp.name) / f"{self.session.case}.seg.nrrd"
        write_seg_nrrd(result.labelmap, result.segments, model_file, overwrite=True)
        self._load_segmentation(model_file)
        self._set(running=False, progress=100, progress_text="done", has_segmentation=True,
                  can_run_model=False, warnings=warnings, segments=self._segments_state(),
                  active_segment=self.session.segments[0].segment_id,
                  slices=self._slices_state(), slices_note="")
        self.reset_views()

    # ------------------------------------------------------------------------------------------
    # page

    def _build_page(self) -> None:
        from trame.ui.vuetify3 import VAppLayout
        from trame.widgets import html
        from trame.widgets import vuetify3 as v3

        with VAppLayout(self.server, theme="dark") as self.layout:
            with v3.VNavigationDrawer(permanent=True, width=330):
                with html.Div(classes="pa-3", style="font-size: 14px;"):
                    html.Div("FemurSeg Review: {{ case_name }}", classes="text-h6 mb-1",
                             id="review-title")
                    html.Div("Research use only: check and correct every segmentation.",
                             classes="text-caption mb-2")
                    v3.VAlert("{{ w }}", v_for="w in warnings", type="warning",
                              density="compact", classes="mb-2 review-warning")
                    with html.Div(v_if=("can_run_model",)):
                        v3.VBtn("Run the model", id="run-model", click=self.run_model,
                                disabled=("running",), color="primary", block=True)
                    with html.Div(v_if=("running || progress_text",), classes="my-2"):
                        v3.VProgressLinear(model_value=("progress",), height=8,
                                           id="model-progress")
                        html.Div("{{ progress_text }} ({{ progress }}%)",
                                 classes="text-caption", id="model-progress-text")
                    html.Div("Segments", classes="text-subtitle-2 mt-2")
                    with html.Div(v_for="s in segments", key="s.id",
                                  classes="d-flex align-center segment-row"):
                        v3.VCheckboxBtn(model_value=("s.visible",), density="compact",
                                        update_modelValue=(self.set_visibility,
                                                           "[s.id, $event]"),
                                        classes="segment-visible")
                        html.Span(style=("`display:inline-block;width:14px;height:14px;"
                                         "border-radius:7px;margin-right:6px;"
                                         "background:${s.color}`",))
                        v3.VBtn("{{ s.name }}", variant=("s.id === active_segment ? "
                                                         "'tonal' : 'text'",),
                                size="small", click=(self.select_segment, "[s.id]"),
                                classes="segment-select")
                        v3.VSlider(model_value=("s.opacity",), min=0, max=1, step=0.05,
                                   hide_details=True, density="compact",
                                   update_modelValue=(self.set_opacity, "[s.id, $event]"),
                                   classes="segment-opacity ml-2")
                    html.Div("Edit", classes="text-subtitle-2 mt-2")
                    with v3.VBtnToggle(v_model=("effect",), mandatory=True, density="compact",
                                       divided=True, classes="mb-1"):
                        for name, icon in (("none", "mdi-cursor-default"),
                                           ("paint", "mdi-brush"), ("erase", "mdi-eraser"),
                                           ("scissors", "mdi-content-cut"),
                                           ("smoothing", "mdi-blur")):
                            v3.VBtn(icon=icon, value=name, id=f"effect-{name}",
                                    title=name.capitalize())
                    v3.VSlider(v_model=("brush_size",), min=1, max=30, step=1,
                               label="Brush %", hide_details=True, density="compact",
                               thumb_label=True)
                    with html.Div(classes="d-flex ga-1 my-1"):
                        v3.VBtn("Undo", id="undo", click=self.undo, disabled=("!can_undo",),
                                size="small", prepend_icon="mdi-undo")
                        v3.VBtn("Redo", id="redo", click=self.redo, disabled=("!can_redo",),
                                size="small", prepend_icon="mdi-redo")
                        v3.VBtn("Smooth", id="smooth", click=self.smooth_segment,
                                disabled=("!has_segmentation",), size="small",
                                title="median smoothing (3 mm, at least 3 voxels) of the "
                                      "active segment")
                    html.Div("Window / level", classes="text-subtitle-2 mt-2")
                    v3.VSlider(v_model=("window",), min=1, max=("range_hi - range_lo",),
                               label="W", hide_details=True, density="compact", id="window")
                    v3.VSlider(v_model=("level",), min=("range_lo",), max=("range_hi",),
                               label="L", hide_details=True, density="compact", id="level")
                    html.Div("Slices to check", classes="text-subtitle-2 mt-2")
                    html.Div("{{ slices_note }}", v_if=("slices_note",),
                             classes="text-caption")
                    with v3.VList(density="compact", id="slices-to-check",
                                  style="max-height: 180px; overflow-y: auto;"):
                        v3.VListItem(v_for="s in slices", key="s.index", title=("s.text",),
                                     subtitle=("s.detail",),
                                     active=("s.index === current_slice",),
                                     click=(self.jump_to_slice, "[s.index]"),
                                     classes="slice-item")
                    v3.VBtn("Save", id="save", click=self.save, color="primary", block=True,
                            disabled=("!has_segmentation",), classes="mt-2",
                            prepend_icon="mdi-content-save")
                    html.Div("into {{ output_dir }}", classes="text-caption")
                    html.Div("{{ save_status }}", id="save-status", classes="text-caption")
                    html.Div("{{ save_error }}", id="save-error",
                             classes="text-caption text-red")
            with v3.VMain():
                with html.Div(style="height: 100vh; display: flex;", id="views"):
                    self.layout_manager.initialize_layout_grid(self.layout)

    # ------------------------------------------------------------------------------------------

    def start(self, *, host: str, port: int, open_browser: bool, token: Optional[str],
              idle_timeout: float = 0) -> None:
        """Serve until stopped; prints the address (with the token, if any) once listening."""
        shown = "127.0.0.1" if host in ("127.0.0.1", "localhost") else host

        def ready(**_):
            url = f"http://{shown}:{self.server.port}/" + (f"?token={token}" if token else "")
            print(f"FemurSeg review of {self.session.image_path.name}: {url}", flush=True)
            print(f"saves go to {self.session.output_dir}; stop with Ctrl-C", flush=True)
            if open_browser:
                import webbrowser

                webbrowser.open(url)

        self.server.controller.on_server_ready.add(ready)
        # trame reads its own options (--content, --data, ...) from sys.argv: give it none of
        # ours, so that nothing on the femurseg command line can make it serve a folder
        argv, sys.argv = sys.argv, sys.argv[:1]
        try:
            self.server.start(host=host, port=port, open_browser=False,
                              show_connection_info=False, disable_logging=True,
                              timeout=int(round(idle_timeout)))
        finally:
            sys.argv = argv
