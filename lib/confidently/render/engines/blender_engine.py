"""The ``bpy`` engine: Blender's Cycles through the ``bpy`` module, headless (spec §4.1).

One Blender scene per (object, environment) pair, built from ``read_factory_settings(use_empty=True)``:

* the object — a built-in (the same triangles, normals and UVs as the Mitsuba engine's, see
  ``procedural.py``), or a .obj/.ply/.stl/.glb/.gltf file through Blender's importers, or a .blend file
  (the object named like the file, 3DB's convention, else every mesh in it) — normalised to the unit bounding
  sphere at the origin, or, for a 3DB ROOT's object (``blender_units``), kept in Blender's size with its origin
  where the file has it (the camera then frames its bounding sphere, see ``_camera_pose``) — and parented to an
  empty that carries ``rotation`` (Euler XYZ), ``offset``, ``scale``;
* its materials — the file's own, or a Diffuse BSDF in the object's colour; a ``texture`` swaps in a Diffuse
  BSDF reading a float image (nearest texel). Texture convention: row = floor(v·s) with Mitsuba's v
  (unadv-patch's), and Mitsuba's loaders set v = 1 − (Blender's v) for .obj files and leave .ply files as
  they are. So every UV layer here holds 1 − (Mitsuba's v) — built-ins are given that, .ply layers are
  flipped at load, .obj/.glb/.blend layers already are — and the tensor goes in upside down (Blender's v = 0
  is the image's bottom row): for a mesh file the tensor is the texture image as Blender shows it, rows
  top→bottom, and the same tensor lands on the same texels under both engines;
* the world — a solid colour, a procedural equirectangular map or an image/HDRI (Environment Texture), both
  backdrop and light, tinted by ``light_color`` and with strength ``light``; or a .blend environment (3DB's),
  opened as the main file instead of the empty scene, so its world, lamps and meshes (out of the segmentation)
  surround the object, ``light``/``light_color`` scaling and tinting its world and lamps alike;
* a camera placed explicitly (no viewport operators): pose from ``procedural.camera_pose``, lens =
  ``focal_length`` on a 36 mm sensor, depth of field at f/``aperture`` focused on the object's centre.

Passes go through the compositor into one EXR per pass in a private temporary folder and are read back with
``bpy.data.images.load`` (each image datablock removed at once). Film is transparent: ``rgb`` = Combined +
Environment pass (the backdrop Cycles would have drawn), then the view transform ("Standard" by default);
``alpha`` is Combined's alpha, ``segmentation`` the object-index pass (Cycles takes it from one sample, so an
edge pixel is the object's when that sample hit it), ``uv`` (with Mitsuba's v, as the texture convention)
and ``depth`` (Z pass, along the view axis, over ``max_depth``, 1 on the background) when asked.
Deterministic for a seed and a thread count. Blender prints progress on the C-level stdout, which carries
the tool's records, so every bpy call runs with fd 1 on /dev/null. Only the compositor set-up differs
between Blender 4.x and 5.x (``_pass_writer``); the 4.x branch is written but not exercised here.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from confidently import __version__
from confidently.errors import InvalidInput, MissingBackend, UsageError
from confidently.render.engines.procedural import (
    BUILTIN_OBJECTS,
    MAX_BOUNCES,
    SENSOR_MM,
    CameraPose,
    bounding_sphere,
    builtin_mesh,
    camera_pose,
    environment_map,
    object_matrix,
    srgb_encode,
    texture_array,
)
from confidently.render.scene import (
    OCCLUSION_DIRECTIONS,
    Engine,
    EnvironmentSpec,
    ObjectSpec,
    Occluder,
    PointLight,
    RenderArgs,
    SceneState,
)

MESH_SUFFIXES = (".obj", ".ply", ".stl", ".glb", ".gltf", ".blend")
VIEW_TRANSFORMS = ("Standard", "Filmic", "AgX", "Raw", "Khronos PBR Neutral")
OBJECT_INDEX = 1
WORLD_MAP_RESOLUTION = 256
# compositor socket names of the render-layer passes, Blender 5.x first, then 4.x
LIQUID = "liquid"  # 3DB's mug: the material of the liquid's surface
# linear colours of the liquids the mug_liquid control mixes (water: tinted, and transmissive by its share)
LIQUID_COLOURS = {"milk": (0.85, 0.83, 0.78), "coffee": (0.06, 0.025, 0.01), "water": (0.55, 0.7, 0.8)}
PASS_SOCKETS = {"Image": ("Image",), "Environment": ("Environment", "Env"), "Depth": ("Depth",),
                "UV": ("UV",), "Index": ("Object Index", "IndexOB")}


def _bpy():
    try:
        import bpy
    except ImportError:
        raise MissingBackend("the bpy engine needs Blender as a Python module: pip install 'confidently[render]' "
                             "(bpy 4.5/5.0 wheels exist for Python 3.11)") from None
    return bpy


@contextmanager
def _quiet_stdout():
    """Blender writes render progress and "Saved: ..." with C printf: park fd 1 on /dev/null meanwhile."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # no C runtime to flush (Windows): leave stdout alone
        yield
        return
    sys.stdout.flush()
    libc.fflush(None)
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        sys.stdout.flush()  # Python-level prints (importers) went to the same fd
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _pixels(image) -> np.ndarray:
    """An image datablock's pixels as H×W×C float32, rows top→bottom (Blender stores them bottom→top)."""
    width, height = image.size
    buffer = np.empty(width * height * image.channels, dtype=np.float32)
    image.pixels.foreach_get(buffer)
    return buffer.reshape(height, width, image.channels)[::-1]


def _set_pixels(image, array: np.ndarray) -> None:
    """Fill an RGBA image datablock from an H×W×3 array whose first row is the image's bottom row."""
    rgba = np.concatenate([array, np.ones(array.shape[:2] + (1,), dtype=np.float32)], axis=2)
    image.pixels.foreach_set(np.ascontiguousarray(rgba, dtype=np.float32).ravel())
    image.update()


def _pass_writer(bpy, scene, directory: str, passes: list[str]) -> None:
    """Compositor: Render Layers → File Output, one single-layer 32-bit EXR per pass named ``pass_<name>``."""
    if hasattr(scene, "compositing_node_group"):  # Blender ≥ 5.0: the compositor is a node group
        tree = bpy.data.node_groups.new("confidently-passes", "CompositorNodeTree")
        scene.compositing_node_group = tree
        output = tree.nodes.new("CompositorNodeOutputFile")
        output.directory = directory + os.sep
        output.file_name = "pass_"
        output.format.media_type = "IMAGE"

        def add(name: str, kind: str) -> None:
            output.file_output_items.new(kind, name)
    else:  # Blender 4.x: scene.node_tree (not exercised here: the venv has bpy 5.0)
        scene.use_nodes = True
        tree = scene.node_tree
        tree.nodes.clear()
        output = tree.nodes.new("CompositorNodeOutputFile")
        output.base_path = directory
        output.file_slots.clear()

        def add(name: str, kind: str) -> None:
            output.file_slots.new(f"pass_{name}")
    output.format.file_format = "OPEN_EXR"
    output.format.color_depth = "32"
    output.format.exr_codec = "NONE"
    layers = tree.nodes.new("CompositorNodeRLayers")
    for name in passes:
        socket = next((s for s in layers.outputs if s.name in PASS_SOCKETS[name]), None)
        if socket is None:
            raise RuntimeError(f"Blender {bpy.app.version_string}: no render-layer output for the {name} pass")
        add(name, {"RGBA": "RGBA", "VECTOR": "VECTOR"}.get(socket.type, "FLOAT"))
        target = output.inputs.get(name) or output.inputs.get(f"pass_{name}")  # 5.x item name / 4.x slot path
        tree.links.new(socket, target)


@dataclass(frozen=True)
class Placement:
    """A loaded object's origin in its file and its bounding sphere about that origin: what the camera frames.
    Normalised objects sit at the origin in the unit sphere; 3DB's (``blender_units``) keep Blender's units."""

    home: np.ndarray = field(default_factory=lambda: np.zeros(3))
    centre: np.ndarray = field(default_factory=lambda: np.zeros(3))
    radius: float = 1.0


def _blend_environment(environment: EnvironmentSpec) -> Path | None:
    """The environment's .blend file (a whole scene, 3DB's blender_environments/*.blend), else None."""
    if environment.path is None or Path(environment.path).suffix.lower() != ".blend":
        return None
    path = Path(environment.path)
    if not path.is_file():
        raise InvalidInput(f"environment {environment.id!r}: scene file {path} does not exist")
    return path


class BlenderEngine(Engine):
    """Cycles renders (CPU by default) of a built-in object or a mesh/.blend file in a solid, procedural or
    image environment. ``device``: ``cpu``, ``auto`` (a GPU when Cycles finds one), ``cuda[:N]``/``gpu``;
    ``view_transform``: Blender's colour view ("Standard" by default; "Filmic"/"AgX" for 3DB parity)."""

    name = "bpy"
    fields = frozenset({"view_point", "zoom", "focal_length", "aperture", "frame_shift", "rotation", "offset",
                        "aim", "scale", "texture", "light", "light_color", "ground", "point_light", "denoise",
                        "occluder", "material", "liquid"})
    builtins = BUILTIN_OBJECTS

    def __init__(self, device: str | torch.device = "cpu", view_transform: str = "Standard", **_: Any):
        self.device = str(device)
        self.view_transform = view_transform
        self.scene = None
        self.args = RenderArgs()
        self.compute = "CPU"
        self.workdir: str | None = None

    # ------------------------------------------------------------------------------------------------ load
    def load(self, obj: ObjectSpec, environment: EnvironmentSpec, args: RenderArgs) -> None:
        self.bpy = bpy = _bpy()
        if args.resolution < 1 or args.samples < 1:
            raise UsageError("render resolution and samples must be >= 1")
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="confidently-bpy-")
        scenery = _blend_environment(environment)
        with _quiet_stdout():
            if scenery is None:
                bpy.ops.wm.read_factory_settings(use_empty=True)
            else:  # 3DB opens the environment's .blend as the main file: its world, lights and meshes
                try:
                    bpy.ops.wm.open_mainfile(filepath=str(scenery), load_ui=False, use_scripts=False)
                except RuntimeError as exc:
                    raise InvalidInput(f"environment {environment.id!r}: Blender cannot open {scenery}: "
                                       f"{str(exc).strip().splitlines()[-1]}") from None
        self.scene = scene = bpy.context.scene
        for thing in scene.objects:  # the environment's meshes are scenery: out of the segmentation
            thing.pass_index = 0
        self.args, self.obj, self.environment = args, obj, environment
        label = obj.label[0] if isinstance(obj.label, list | tuple) else obj.label
        self.label = int(label)
        self._settings(scene, args)
        self.container = bpy.data.objects.new("confidently-object", None)
        scene.collection.objects.link(self.container)
        self.container.rotation_mode = "XYZ"
        self.meshes, self.placement = self._object(obj)
        self.colour_material = self._diffuse("confidently-colour", tuple(obj.color) + (1.0,))
        self.original = []
        for mesh_object in self.meshes:
            mesh_object.pass_index = OBJECT_INDEX
            mesh_object.parent = self.container
            if not mesh_object.data.materials:
                mesh_object.data.materials.append(self.colour_material)
            self.original.append([slot.material for slot in mesh_object.material_slots])
        self.texture_image = None
        self.texture_material = None
        self._texture = None
        self.local_vertices = [self._vertices(o) for o in self.meshes]
        self.point_light = None
        self.occluders: dict[tuple, Any] = {}  # (path, builtin) → the occluder's empty, hidden when unused
        self.replacements: dict[Path, Any] = {}  # material file → its material
        self.liquid_material = None
        self._world(environment)
        camera = bpy.data.cameras.new("confidently-camera")
        camera.sensor_fit = "HORIZONTAL"
        camera.sensor_width = SENSOR_MM
        camera.clip_start, camera.clip_end = 0.01, 1000.0
        self.camera = bpy.data.objects.new("confidently-camera", camera)
        scene.collection.objects.link(self.camera)
        scene.camera = self.camera
        layer = scene.view_layers[0]
        layer.use_pass_environment = True
        layer.use_pass_z = args.with_depth
        layer.use_pass_uv = args.with_uv
        layer.use_pass_object_index = args.with_segmentation
        self.passes = ["Image", "Environment"] + [name for name, wanted in (
            ("Index", args.with_segmentation), ("UV", args.with_uv), ("Depth", args.with_depth)) if wanted]
        _pass_writer(bpy, scene, self.workdir, self.passes)

    def _settings(self, scene, args: RenderArgs) -> None:
        render, cycles = scene.render, scene.cycles
        render.engine = "CYCLES"
        self.compute = self._select_device(scene)
        render.threads_mode = "FIXED"
        render.threads = max(1, int(args.threads))
        render.resolution_x = render.resolution_y = args.resolution
        render.resolution_percentage = 100
        render.film_transparent = True
        render.use_persistent_data = True  # keep the BVH between renders of the pair
        render.use_compositing, render.use_sequencer = True, False  # as a .blend environment may have them
        for i, layer in enumerate(scene.view_layers):  # our passes come from the first view layer only
            layer.use = i == 0
        cycles.samples = args.samples
        cycles.use_adaptive_sampling = False
        cycles.use_denoising = False
        cycles.use_animated_seed = False
        cycles.pixel_filter_type = "BOX"  # as Mitsuba's box filter: a pixel averages its own samples
        cycles.filter_width = 1.0
        cycles.max_bounces = MAX_BOUNCES
        cycles.diffuse_bounces = cycles.glossy_bounces = cycles.transmission_bounces = MAX_BOUNCES
        if self.view_transform not in VIEW_TRANSFORMS:
            raise UsageError(f"view transform {self.view_transform!r}: choose {', '.join(VIEW_TRANSFORMS)}")
        scene.display_settings.display_device = "sRGB"
        try:
            scene.view_settings.view_transform = self.view_transform
        except TypeError:
            raise UsageError(f"this Blender ({self.bpy.app.version_string}) has no view transform "
                             f"{self.view_transform!r}") from None
        scene.view_settings.look = "None"
        scene.view_settings.exposure = 0.0
        scene.view_settings.gamma = 1.0
        settings = render.image_settings  # what save_render writes when a non-Standard view is applied
        settings.file_format = "PNG"
        settings.color_mode = "RGB"
        settings.color_depth = "16"

    def _select_device(self, scene) -> str:
        device = self.device.lower()
        if device == "cpu":
            scene.cycles.device = "CPU"
            return "CPU"
        kind, _, index = device.partition(":")
        if kind not in ("auto", "gpu", "cuda", "optix", "hip", "oneapi", "metal"):
            raise UsageError(f"device {self.device!r}: choose cpu, auto, gpu or cuda[:N]")
        preferences = self.bpy.context.preferences.addons["cycles"].preferences
        backends = {"cuda": ("OPTIX", "CUDA"), "optix": ("OPTIX",), "hip": ("HIP",), "oneapi": ("ONEAPI",),
                    "metal": ("METAL",)}.get(kind, ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL"))
        for backend in backends:
            try:
                preferences.compute_device_type = backend
            except TypeError:  # a backend this build of Blender does not know
                continue
            with _quiet_stdout():  # Cycles reports the GPU libraries it cannot open on stdout
                preferences.get_devices()
            found = [d for d in preferences.devices if d.type == backend]
            if index:
                found = found[int(index):int(index) + 1] if index.isdigit() else []
            if found:
                for d in preferences.devices:
                    d.use = d in found
                scene.cycles.device = "GPU"
                return backend
        if kind == "auto":
            scene.cycles.device = "CPU"
            return "CPU"
        raise UsageError(f"device {self.device!r}: Cycles finds no such GPU here; use --device cpu")

    def _object(self, obj: ObjectSpec) -> list:
        bpy = self.bpy
        if obj.builtin is not None:
            mesh = builtin_mesh(obj.builtin)
            center, radius = bounding_sphere(mesh.positions)
            data = bpy.data.meshes.new(obj.builtin)
            data.from_pydata(((mesh.positions - center) / radius).tolist(), [], mesh.faces.tolist())
            uv = data.uv_layers.new(name="UVMap")
            corners = np.empty(len(data.loops), dtype=np.int64)
            data.loops.foreach_get("vertex_index", corners)
            blender_uvs = np.stack([mesh.uvs[:, 0], 1 - mesh.uvs[:, 1]], 1)  # see the module doc
            uv.data.foreach_set("uv", blender_uvs[corners].astype(np.float32).ravel())
            data.shade_smooth()
            data.normals_split_custom_set_from_vertices(mesh.normals.tolist())
            data.update()
            mesh_object = bpy.data.objects.new(obj.builtin, data)
            self.scene.collection.objects.link(mesh_object)
            return [mesh_object], Placement()
        path = Path(obj.path)
        suffix = path.suffix.lower()
        if suffix not in MESH_SUFFIXES:
            raise UsageError(f"object {obj.id!r}: the bpy engine reads {'/'.join(MESH_SUFFIXES)} files, not "
                             f"{suffix or 'files without a suffix'}")
        if not path.is_file():
            raise InvalidInput(f"object {obj.id!r}: mesh file {path} does not exist")
        before = set(bpy.data.objects)
        anchor = None
        try:
            with _quiet_stdout():
                if suffix == ".blend":
                    anchor = self._append_blend(path)
                elif suffix in (".obj", ".ply", ".stl"):  # coordinates as they are (z up), as Mitsuba reads them
                    importer = {".obj": bpy.ops.wm.obj_import, ".ply": bpy.ops.wm.ply_import,
                                ".stl": bpy.ops.wm.stl_import}[suffix]
                    importer(filepath=str(path), forward_axis="Y", up_axis="Z")
                else:  # glTF is y-up by definition: Blender's importer turns it z-up
                    bpy.ops.import_scene.gltf(filepath=str(path))
        except RuntimeError as exc:
            raise InvalidInput(f"object {obj.id!r}: Blender cannot import {path}: "
                               f"{str(exc).strip().splitlines()[-1]}") from None
        bpy.context.view_layer.update()
        new = [o for o in bpy.data.objects if o not in before]
        meshes = [o for o in new if o.type == "MESH" and len(o.data.vertices)]
        if not meshes:
            raise InvalidInput(f"object {obj.id!r}: {path} holds no mesh")
        home = tuple(anchor.matrix_world.translation) if anchor is not None else (0.0, 0.0, 0.0)
        for o in new:  # world transforms baked into single-user meshes; lights, cameras and empties dropped
            if o in meshes:
                if o.data.users > 1:
                    o.data = o.data.copy()
                matrix = o.matrix_world.copy()
                o.parent = None
                o.data.transform(matrix)
                o.matrix_world.identity()
        for o in new:
            if o not in meshes:
                bpy.data.objects.remove(o, do_unlink=True)
        positions = []
        for o in meshes:
            co = np.empty(3 * len(o.data.vertices), dtype=np.float64)
            o.data.vertices.foreach_get("co", co)
            positions.append(co.reshape(-1, 3))
        center, radius = bounding_sphere(np.concatenate(positions))
        import mathutils

        if obj.blender_units:  # 3DB: Blender's size; the origin is the named object's, which stays where it was
            normalise = mathutils.Matrix.Translation(-mathutils.Vector(home))
            placement = Placement(np.asarray(home, dtype=np.float64), np.asarray(center) - np.asarray(home),
                                  float(radius))
        else:
            normalise = mathutils.Matrix.Scale(1 / radius, 4) @ mathutils.Matrix.Translation(-mathutils.Vector(center))
            placement = Placement()
        for o in meshes:
            o.data.transform(normalise)
            if suffix == ".ply":  # Mitsuba reads a .ply's v as it is: flip, so 1 − v holds here too
                for layer in o.data.uv_layers:
                    uvs = np.empty(2 * len(layer.data), dtype=np.float32)
                    layer.data.foreach_get("uv", uvs)
                    uvs[1::2] = 1 - uvs[1::2]
                    layer.data.foreach_set("uv", uvs)
            o.data.update()
        return meshes, placement

    def _append_blend(self, path: Path):
        """3DB's convention: the object named like the file (returned); else every object in it (None)."""
        bpy = self.bpy
        with bpy.data.libraries.load(str(path), link=False) as (source, target):
            named = path.stem in source.objects
            target.objects = [path.stem] if named else list(source.objects)
        for o in target.objects:
            if o is not None:
                self.scene.collection.objects.link(o)
        return target.objects[0] if named else None

    def _diffuse(self, name: str, colour: tuple[float, ...], image=None):
        material = self.bpy.data.materials.new(name)
        if material.node_tree is None:  # Blender 4.x; 5.x materials always have nodes
            material.use_nodes = True
        nodes, links = material.node_tree.nodes, material.node_tree.links
        nodes.clear()
        shader = nodes.new("ShaderNodeBsdfDiffuse")
        shader.inputs["Color"].default_value = colour
        output = nodes.new("ShaderNodeOutputMaterial")
        links.new(shader.outputs["BSDF"], output.inputs["Surface"])
        if image is not None:
            texture = nodes.new("ShaderNodeTexImage")
            texture.name = "texture"
            texture.image, texture.interpolation, texture.extension = image, "Closest", "EXTEND"
            links.new(texture.outputs["Color"], shader.inputs["Color"])
        return material

    def _world(self, environment: EnvironmentSpec) -> None:
        bpy = self.bpy
        self._light = None
        self.scenery_lights = None
        if _blend_environment(environment) is not None:
            self._scenery_world()
            return
        world = bpy.data.worlds.new("confidently-world")
        if world.node_tree is None:  # Blender 4.x
            world.use_nodes = True
        self.scene.world = world
        nodes, links = world.node_tree.nodes, world.node_tree.links
        nodes.clear()
        self.background = nodes.new("ShaderNodeBackground")
        output = nodes.new("ShaderNodeOutputWorld")
        links.new(self.background.outputs["Background"], output.inputs["Surface"])
        self.tint = None
        if environment.solid is not None:
            return
        # Cycles importance-samples the world from a map it re-bakes whenever the world changes: at the default
        # 1024 pixels that costs seconds per render on one thread; our procedural maps are 256 wide anyway
        world.cycles.sampling_method = "MANUAL"
        world.cycles.sample_map_resolution = WORLD_MAP_RESOLUTION
        if environment.procedural is not None:
            array = environment_map(environment.id, environment.procedural)
            image = bpy.data.images.new("confidently-environment", array.shape[1], array.shape[0], alpha=False,
                                        float_buffer=True)
            _set_pixels(image, array[::-1])
        else:
            path = Path(environment.path)
            if not path.is_file():
                raise InvalidInput(f"environment {environment.id!r}: image file {path} does not exist")
            try:
                image = bpy.data.images.load(str(path))
            except RuntimeError as exc:
                raise InvalidInput(f"environment {environment.id!r}: Blender cannot read {path}: "
                                   f"{str(exc).strip().splitlines()[-1]}") from None
        texture = nodes.new("ShaderNodeTexEnvironment")
        texture.image, texture.interpolation, texture.projection = image, "Linear", "EQUIRECTANGULAR"
        self.tint = nodes.new("ShaderNodeVectorMath")
        self.tint.operation = "MULTIPLY"
        links.new(texture.outputs["Color"], self.tint.inputs[0])
        links.new(self.tint.outputs["Vector"], self.background.inputs["Color"])

    # ---------------------------------------------------------------------------------------------- render
    def render(self, state: SceneState, seed: int) -> dict[str, torch.Tensor]:
        if self.scene is None:
            raise RuntimeError("BlenderEngine.render before load")
        import mathutils

        bpy, scene, args = self.bpy, self.scene, self.args
        object_matrix(state)  # validates the scale as the Mitsuba engine does
        home = self.placement.home
        self.container.location = tuple(float(v) for v in home + np.asarray(state.offset, dtype=np.float64))
        self.container.rotation_euler = tuple(float(v) for v in state.rotation)
        self.container.scale = (float(state.scale),) * 3
        if state.ground is not None:
            self._pin(float(state.ground))
        pose = self._camera_pose(state)
        self.camera.matrix_world = mathutils.Matrix(pose.matrix().tolist())
        camera = self.camera.data
        camera.lens = float(state.focal_length)
        camera.dof.use_dof = state.aperture is not None
        if state.aperture is not None:
            if state.aperture <= 0:
                raise UsageError(f"aperture {state.aperture}: must be a positive f-stop")
            camera.dof.aperture_fstop = float(state.aperture)
            camera.dof.focus_distance = pose.focus_distance
        self._set_surfaces(state)
        self._set_point_light(state.point_light)
        self._set_occluder(state.occluder, pose)
        scene.cycles.use_denoising = bool(state.denoise)
        if state.denoise:
            scene.cycles.denoiser = "OPENIMAGEDENOISE"
        self._set_light(float(state.light), tuple(float(c) for c in state.light_color))
        scene.cycles.seed = int(seed) % 2**31
        for stale in Path(self.workdir).glob("pass_*"):
            stale.unlink()
        with _quiet_stdout():
            bpy.ops.render.render(write_still=False)
        frames = {name: self._read_pass(name) for name in self.passes}
        image, environment = frames["Image"], frames["Environment"]
        linear = image[..., :3] + environment[..., :3]  # premultiplied object + the backdrop it leaves visible
        alpha = np.clip(image[..., 3], 0.0, 1.0)
        out = {"rgb": torch.from_numpy(self._view(linear)).permute(2, 0, 1).contiguous(),
               "alpha": torch.from_numpy(alpha[None].copy())}
        if args.with_segmentation:
            seg = np.where(frames["Index"][..., 0] >= OBJECT_INDEX - 0.5, self.label, -1).astype(np.int32)
            out["segmentation"] = torch.from_numpy(seg[None].copy())
        if args.with_uv:
            uv, weight = frames["UV"][..., :2], frames["UV"][..., 2:3]  # summed over the samples that hit, and
            uv = np.where(weight > 1e-6, uv / np.maximum(weight, 1e-6), 0.0)  # their share in the third channel
            uv[..., 1] = np.where(weight[..., 0] > 1e-6, 1 - uv[..., 1], 0.0)  # back to Mitsuba's v
            out["uv"] = torch.from_numpy(np.clip(uv, 0, 1).astype(np.float32)).permute(2, 0, 1).contiguous()
        if args.with_depth:
            z = frames["Depth"][..., 0]
            depth = np.where(z < 1e9, np.clip(z / args.max_depth, 0, 1), 1.0).astype(np.float32)
            out["depth"] = torch.from_numpy(depth[None].copy())
        return out

    def _camera_pose(self, state: SceneState) -> CameraPose:
        """``camera_pose`` for a normalised object; for one in Blender units (3DB's), the same view of its
        bounding sphere: distances × its radius, aimed at its centre as placed where the camera control ran
        (``aim``, plus the origin's home and the rotated, scaled centre), so zoom 1 frames it whatever its size."""
        if not self.obj.blender_units:
            return camera_pose(state)
        placement = self.placement
        unit = camera_pose(replace(state, aim=(0.0, 0.0, 0.0), offset=(0.0, 0.0, 0.0)))
        turn = np.asarray(self.container.rotation_euler.to_matrix(), dtype=np.float64) * float(state.scale)
        centre = turn @ placement.centre
        aim = placement.home + np.asarray(state.aim, dtype=np.float64) + centre
        origin = aim + placement.radius * unit.origin
        target = np.asarray(self.container.location, dtype=np.float64) + centre
        return CameraPose(origin, unit.right, unit.up, unit.forward, unit.fov,
                          max(float(np.dot(target - origin, unit.forward)), 1e-3))

    def _scenery_world(self) -> None:
        """A .blend environment keeps its own world and lamps; ``light`` scales the saved strength of both (each
        Background node's and each lamp's energy) and ``light_color`` tints both (a tint node per Background,
        lamp colour × tint), so at the defaults (1, white) the scene renders as saved, as 3DB renders it (3DB
        has no control over an environment's light; emissive materials stay as saved). No world: a black one."""
        bpy = self.bpy
        self.scenery_lamps = [(lamp, float(lamp.energy), tuple(float(c) for c in lamp.color))
                              for lamp in dict.fromkeys(o.data for o in self.scene.objects if o.type == "LIGHT")]
        world = self.scene.world
        if world is None:
            world = self.scene.world = bpy.data.worlds.new("confidently-world")
            world.color = (0.0, 0.0, 0.0)
        if world.node_tree is None:  # a world without nodes shows its colour: give it the equivalent nodes
            world.use_nodes = True
            background = next(n for n in world.node_tree.nodes if n.type == "BACKGROUND")
            background.inputs["Color"].default_value = (*world.color, 1.0)
        nodes, links = world.node_tree.nodes, world.node_tree.links
        self.scenery_lights = []
        for node in [n for n in nodes if n.type == "BACKGROUND"]:
            tint = nodes.new("ShaderNodeVectorMath")
            tint.operation = "MULTIPLY"
            colour = node.inputs["Color"]
            if colour.is_linked:
                links.new(colour.links[0].from_socket, tint.inputs[0])
            else:
                tint.inputs[0].default_value = tuple(colour.default_value)[:3]
            tint.inputs[1].default_value = (1.0, 1.0, 1.0)
            links.new(tint.outputs["Vector"], colour)
            self.scenery_lights.append((node, float(node.inputs["Strength"].default_value), tint))

    def _set_light(self, light: float, colour: tuple[float, float, float]) -> None:
        if (light, colour) == self._light:  # untouched, the world keeps its baked importance map
            return
        if self.scenery_lights is not None:
            for node, strength, tint in self.scenery_lights:
                node.inputs["Strength"].default_value = strength * light
                tint.inputs[1].default_value = colour
            for lamp, energy, saved in self.scenery_lamps:
                lamp.energy = energy * light
                lamp.color = tuple(s * c for s, c in zip(saved, colour, strict=True))
        else:
            if self.tint is None:
                solid = self.environment.solid
                self.background.inputs["Color"].default_value = tuple(
                    s * c for s, c in zip(solid, colour, strict=True)) + (1.0,)
            else:
                self.tint.inputs[1].default_value = colour
            self.background.inputs["Strength"].default_value = light
        self._light = (light, colour)

    def _read_pass(self, name: str) -> np.ndarray:
        files = sorted(Path(self.workdir).glob(f"pass_{name}*.exr"))
        if not files:
            raise RuntimeError(f"Cycles wrote no {name} pass into {self.workdir}")
        image = self.bpy.data.images.load(str(files[0]), check_existing=False)
        try:
            return _pixels(image).copy()
        finally:
            self.bpy.data.images.remove(image)  # leak guard: one datablock per pass per render otherwise
            files[0].unlink()

    def _view(self, linear: np.ndarray) -> np.ndarray:
        """Scene-linear RGB → display RGB through the view transform, rows top→bottom."""
        if self.view_transform == "Standard":
            return srgb_encode(linear).astype(np.float32)
        bpy = self.bpy
        height, width = linear.shape[:2]
        image = bpy.data.images.new("confidently-view", width, height, alpha=False, float_buffer=True)
        path = os.path.join(self.workdir, "view.png")
        try:
            _set_pixels(image, linear[::-1])
            with _quiet_stdout():
                image.save_render(path, scene=self.scene)  # Blender's OCIO applies the scene's view transform
        finally:
            bpy.data.images.remove(image)
        shown = bpy.data.images.load(path, check_existing=False)
        try:
            shown.colorspace_settings.name = "Non-Color"  # the PNG's display values, not decoded back
            return _pixels(shown)[..., :3].copy()
        finally:
            bpy.data.images.remove(shown)
            os.remove(path)

    def _set_surfaces(self, state: SceneState) -> None:
        """Every slot takes the texture's material, else the replacement material, else its own (the liquid's
        own with the mix of ``state.liquid``)."""
        replacement = self._set_texture(state.texture)
        if replacement is None and state.material is not None:
            replacement = self._replacement(Path(state.material))
        liquid = self._set_liquid(state.liquid) if state.liquid is not None and replacement is None else None
        for mesh_object, materials in zip(self.meshes, self.original, strict=True):
            for slot, material in zip(mesh_object.material_slots, materials, strict=True):
                target = replacement or (liquid if liquid is not None and material is not None
                                         and material.name == LIQUID else material)
                if slot.material is not target:
                    slot.material = target

    def _set_texture(self, texture: torch.Tensor | None):
        """The texture's material (made once per texture), or None without a texture."""
        if texture is None:
            return None
        array = texture_array(texture)
        if self._texture is not None and self._texture.shape == array.shape and np.array_equal(self._texture, array):
            return self.texture_material
        if any(not o.data.uv_layers for o in self.meshes):
            raise InvalidInput(f"object {self.obj.id!r} has no UV coordinates, so a texture cannot be applied; "
                               "unwrap it (e.g. Blender's Smart UV Project) and save it again")
        # a new image datablock for every new texture: Cycles' persistent data keeps an image it has loaded,
        # even when its pixels change
        bpy = self.bpy
        side = array.shape[0]
        image = bpy.data.images.new("confidently-texture", side, side, alpha=False, float_buffer=True)
        _set_pixels(image, array[::-1])  # tensor row 0 at the image's top, where Blender's v ≈ 1
        if self.texture_material is None:
            self.texture_material = self._diffuse("confidently-texture", (1.0, 1.0, 1.0, 1.0), image)
        self.texture_material.node_tree.nodes["texture"].image = image
        if self.texture_image is not None:
            bpy.data.images.remove(self.texture_image)
        self.texture_image = image
        self._texture = array
        return self.texture_material

    def _replacement(self, path: Path):
        """The one material of a .blend file (3DB's material control), appended once."""
        if path not in self.replacements:
            if not path.is_file():
                raise InvalidInput(f"material file {path} does not exist")
            with self.bpy.data.libraries.load(str(path), link=False) as (source, target):
                names = list(source.materials)
                if len(names) != 1:
                    raise InvalidInput(f"material file {path} holds {len(names)} materials "
                                       f"({', '.join(names) or 'none'}); it must hold exactly one")
                target.materials = names
            self.replacements[path] = target.materials[0]
        return self.replacements[path]

    def _set_liquid(self, ratios: tuple[float, float]):
        """A copy of the object's ``liquid`` material mixed as (milk, coffee): a 3DB mug's own ``coffee_milk_ratio``
        and ``water_ratio`` value nodes when it has them, else a diffuse/glass mix of the liquids' colours."""
        milk, coffee = (float(r) for r in ratios)
        water = max(0.0, 1.0 - milk - coffee)
        if self.liquid_material is None:
            own = next((m for materials in self.original for m in materials if m is not None and m.name == LIQUID),
                       None)
            if own is None:
                raise InvalidInput(f"object {self.obj.id!r} has no material named {LIQUID!r} for mug_liquid to drive")
            self.liquid_material = own.copy()
            nodes = self.liquid_material.node_tree.nodes
            if not {"coffee_milk_ratio", "water_ratio"} <= set(nodes.keys()):
                self._liquid_shader(self.liquid_material)
        nodes = self.liquid_material.node_tree.nodes
        if "confidently-liquid" in nodes:
            colour = [sum(share * LIQUID_COLOURS[name][i] for name, share in
                          (("milk", milk), ("coffee", coffee), ("water", water))) for i in range(3)]
            nodes["confidently-liquid"].inputs["Color"].default_value = (*colour, 1.0)
            nodes["confidently-water"].inputs["Fac"].default_value = water
        else:
            nodes["coffee_milk_ratio"].outputs[0].default_value = coffee / (coffee + milk) if coffee + milk else 0.0
            nodes["water_ratio"].outputs[0].default_value = water
        return self.liquid_material

    def _liquid_shader(self, material) -> None:
        nodes, links = material.node_tree.nodes, material.node_tree.links
        nodes.clear()
        diffuse = nodes.new("ShaderNodeBsdfDiffuse")
        diffuse.name = "confidently-liquid"
        glass = nodes.new("ShaderNodeBsdfGlass")
        glass.inputs["Color"].default_value = (*LIQUID_COLOURS["water"], 1.0)
        mix = nodes.new("ShaderNodeMixShader")
        mix.name = "confidently-water"
        output = nodes.new("ShaderNodeOutputMaterial")
        links.new(diffuse.outputs["BSDF"], mix.inputs[1])
        links.new(glass.outputs["BSDF"], mix.inputs[2])
        links.new(mix.outputs["Shader"], output.inputs["Surface"])

    @staticmethod
    def _vertices(mesh_object) -> np.ndarray:
        co = np.empty(3 * len(mesh_object.data.vertices), dtype=np.float64)
        mesh_object.data.vertices.foreach_get("co", co)
        return co.reshape(-1, 3)

    def _world_vertices(self, meshes, local: list[np.ndarray]) -> np.ndarray:
        self.bpy.context.view_layer.update()
        out = []
        for mesh_object, co in zip(meshes, local, strict=True):
            matrix = np.array(mesh_object.matrix_world)
            out.append(co @ matrix[:3, :3].T + matrix[:3, 3])
        return np.concatenate(out)

    def _pin(self, ground: float) -> None:
        """3DB's pin_to_ground: the placed object's lowest vertex moved to height ``ground``."""
        lowest = float(self._world_vertices(self.meshes, self.local_vertices)[:, 2].min())
        x, y, z = self.container.location
        self.container.location = (x, y, z + ground - lowest)

    def _set_point_light(self, light: PointLight | None) -> None:
        if light is None:
            if self.point_light is not None:
                self.point_light.hide_render = True
            return
        if self.point_light is None:
            data = self.bpy.data.lights.new("confidently-point", "POINT")
            data.shadow_soft_size = 1.0  # 3DB adds its light with radius 1
            self.point_light = self.bpy.data.objects.new("confidently-point", data)
            self.scene.collection.objects.link(self.point_light)
        direction = np.asarray(light.direction, dtype=np.float64)
        centre = np.asarray(self.container.location, dtype=np.float64)
        self.point_light.location = tuple(centre + light.distance * direction / np.linalg.norm(direction))
        self.point_light.data.color = tuple(light.color)
        self.point_light.data.energy = float(light.energy)
        self.point_light.hide_render = False

    def _occluder(self, occluder: Occluder):
        """The occluder's empty (its meshes normalised to the unit sphere, out of the segmentation), made once."""
        key = (occluder.path, occluder.builtin)
        if key not in self.occluders:
            spec = ObjectSpec(id="occluder", label=-1, builtin=occluder.builtin,
                              path=Path(occluder.path) if occluder.path is not None else None,
                              blender_units=self.obj.blender_units and occluder.path is not None)
            meshes, _ = self._object(spec)
            holder = self.bpy.data.objects.new("confidently-occluder", None)
            self.scene.collection.objects.link(holder)
            grey = self._diffuse("confidently-occluder", (0.35, 0.35, 0.35, 1.0))
            for mesh_object in meshes:
                mesh_object.parent = holder
                mesh_object.pass_index = 0
                if not mesh_object.data.materials:
                    mesh_object.data.materials.append(grey)
            self.occluders[key] = (holder, meshes, [self._vertices(m) for m in meshes])
        return self.occluders[key]

    def _set_occluder(self, occluder: Occluder | None, pose) -> None:
        """3DB's occlusion: the occluder at ``zoom`` of the way to the camera, then slid in the plane parallel to
        the image so its 2-D box overlaps the object's by ``ratio`` of the object's box area, from ``direction``."""
        for holder, meshes, _ in self.occluders.values():
            holder.hide_render = True
            for mesh_object in meshes:
                mesh_object.hide_render = True
        if occluder is None:
            return
        holder, meshes, local = self._occluder(occluder)
        holder.hide_render = False
        for mesh_object in meshes:
            mesh_object.hide_render = False
        origin, right, up, forward = (np.asarray(v, dtype=np.float64) for v in
                                      (pose.origin, pose.right, pose.up, pose.forward))
        tangent = np.tan(pose.fov / 2)

        def project(points: np.ndarray) -> np.ndarray:
            d = points - origin
            depth = np.maximum(d @ forward, 1e-6)
            return np.stack([d @ right / depth, d @ up / depth], 1) / tangent  # [-1, 1] across the frame

        def box(points: np.ndarray) -> tuple[float, float, float, float]:
            uv = project(points)
            (x0, y0), (x1, y1) = uv.min(0), uv.max(0)
            return (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0

        centre = np.asarray(self.container.location, dtype=np.float64)
        place = centre + occluder.zoom * (origin - centre)
        holder.location, holder.rotation_euler = tuple(place), (0.0, 0.0, 0.0)
        # a built-in stand-in (3DB's occluders are always files) is sized by the object: radius = scale × its radius
        size = float(occluder.scale) * (self.placement.radius if occluder.path is None else 1.0)
        holder.scale = (size,) * 3
        xc, yc, w, h = box(self._world_vertices(self.meshes, self.local_vertices))
        ox, oy, ow, oh = box(self._world_vertices(meshes, local))
        overlap = min(ow * oh, occluder.ratio * w * h)
        dx, dy = OCCLUSION_DIRECTIONS[occluder.direction]
        if dx and dy:  # a corner: the overlap keeps the object's aspect ratio
            px = min(np.sqrt(overlap * w / max(h, 1e-9)), w, ow)
            py = min(overlap / max(px, 1e-9), h, oh)
        else:  # a side: the overlap spans the shorter of the two extents across the approach
            px = min(overlap / max(min(oh, h), 1e-9), w, ow) if dx else 0.0
            py = min(overlap / max(min(ow, w), 1e-9), h, oh) if dy else 0.0
        target_x = xc + dx * (ow / 2 + w / 2 - px)
        target_y = yc + dy * (oh / 2 + h / 2 - py)
        depth = float((place - origin) @ forward)
        shift = ((target_x - ox) * right + (target_y - oy) * up) * depth * tangent
        holder.location = tuple(place + shift)

    def describe(self) -> dict[str, Any]:
        blender = self.bpy.app.version_string if self.scene is not None else None
        return {"engine": self.name, "version": __version__, "blender": blender, "cycles_device": self.compute,
                "resolution": self.args.resolution, "samples": self.args.samples, "threads": self.args.threads,
                "view_transform": self.view_transform, "max_bounces": MAX_BOUNCES,
                "texture_convention": "row=floor(v*s)"}

    def close(self) -> None:
        """Remove the temporary pass folder (also done when the engine is garbage-collected)."""
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to clean reliably
            pass
