"""The built-in structure-guidance stage: ``none`` (default) and ``controlnet``.

Structure guidance gives each local window's UNet call extra conditioning
(AccDiffusion v2, TPAMI 2025): a ControlNet fed with the edges of the image
the previous phase produced, cropped exactly where the window sits, so the
windows keep the structure the lower-resolution phase laid out instead of
drawing a new object in every window.

* ``none``: no extra conditioning; the run is exactly as without this stage.
* ``controlnet``: a diffusers ``ControlNetModel`` (``--controlnet``),
  conditioned on the canny edges of the previous phase's decoded image
  (thresholds ``(1 -/+ canny_sigma) x`` its median intensity) or on a
  user-given ``--control-image``, upsampled to the phase's pixel size. Only
  the local path is guided, as in v2: a dilated sample has no coherent
  control crop.

Canny runs in torch (no OpenCV needed at run time): Sobel gradients with the
L1 magnitude, non-maximum suppression in four directions, double threshold
and hysteresis, as ``cv2.Canny(image, low, high)`` computes them.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from PIL import Image

import attrs

from .errors import SettingsError
from .options import option
from .types import ControlViews, StructureRequest

#: The common "auto canny" width: thresholds at (1 -/+ 0.33) x the median intensity.
DEFAULT_CANNY_SIGMA = 0.33


def canny(gray: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Canny edges of a ``(H, W)`` grayscale image in ``[0, 255]``: a bool ``(H, W)`` map.

    Gradient magnitudes (3x3 Sobel, ``|gx| + |gy|``, reflected borders) above
    ``high`` are edges, those above ``low`` are edges when connected (8-way)
    to one, after non-maximum suppression along the gradient direction.
    """
    g = gray.float()[None, None]
    g = F.pad(g, (1, 1, 1, 1), mode="reflect") if min(gray.shape) > 1 else F.pad(g, (1, 1, 1, 1), mode="replicate")
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    gx = F.conv2d(g, kx[None, None])[0, 0]
    gy = F.conv2d(g, kx.t()[None, None])[0, 0]
    mag = gx.abs() + gy.abs()
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180.0
    m = F.pad(mag[None, None], (1, 1, 1, 1))[0, 0]
    h, w = mag.shape

    def at(dy: int, dx: int) -> torch.Tensor:
        return m[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    horizontal = (angle < 22.5) | (angle >= 157.5)
    diag = (angle >= 22.5) & (angle < 67.5)
    vertical = (angle >= 67.5) & (angle < 112.5)
    anti = (angle >= 112.5) & (angle < 157.5)
    keep = torch.zeros_like(mag, dtype=torch.bool)
    for sel, (dy, dx) in ((horizontal, (0, 1)), (diag, (1, 1)), (vertical, (1, 0)), (anti, (1, -1))):
        keep |= sel & (mag > at(-dy, -dx)) & (mag >= at(dy, dx))
    nms = torch.where(keep, mag, torch.zeros_like(mag))
    weak = nms > low
    edges = nms > high
    while True:  # hysteresis: grow the strong edges through connected weak ones
        grown = weak & (F.max_pool2d(edges[None, None].float(), 3, 1, 1)[0, 0] > 0)
        grown |= edges
        if torch.equal(grown, edges):
            return edges
        edges = grown


def auto_canny(image: Image.Image, sigma: float = DEFAULT_CANNY_SIGMA) -> Image.Image:
    """Canny edges of ``image`` with thresholds at ``(1 - sigma)`` and
    ``(1 + sigma)`` times its median intensity, as a white-on-black RGB image."""
    gray = torch.frombuffer(bytearray(image.convert("L").tobytes()), dtype=torch.uint8)
    gray = gray.reshape(image.size[1], image.size[0]).float()
    median = float(gray.flatten().median())
    low, high = max(0.0, (1.0 - sigma) * median), min(255.0, (1.0 + sigma) * median)
    edges = canny(gray, low, high)
    arr = (edges.to(torch.uint8) * 255).numpy()
    return Image.fromarray(arr).convert("RGB")


def image_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as ``(3, H, W)`` float32 in ``[0, 1]``."""
    image = image.convert("RGB")
    t = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(image.size[1], image.size[0], 3)
    return t.permute(2, 0, 1).float() / 255.0


def window_crops(control: torch.Tensor, request: StructureRequest) -> torch.Tensor:
    """The crops of a phase's control image ``(3, H, W)`` (``H x W`` = the
    phase's image size) under each window of ``request.layout``: the image is
    padded by ``pad * vae_scale_factor`` px of zeros on every side (no edges
    in the jitter padding) and cut at ``(top, left) * vae_scale_factor``,
    the windows' place on the padded canvas. Returns ``(N, 3, h, w)``."""
    v, p = request.vae_scale_factor, request.layout.pad
    padded = F.pad(control, (p * v, p * v, p * v, p * v)) if p else control
    return torch.stack([padded[:, w.top * v:w.bottom * v, w.left * v:w.right * v] for w in request.layout.windows])


@attrs.frozen
class NoStructureGuidance:
    """No extra conditioning: the local windows' UNet calls are unchanged."""

    def prepare(self, adapter: Any) -> None:
        pass

    def control(self, request: StructureRequest) -> Optional[ControlViews]:
        return None

    def pictures(self) -> tuple[tuple[int, Image.Image], ...]:
        """No control images."""
        return ()


@attrs.frozen
class ControlNetGuidance:
    """AccDiffusion v2's structure guidance: a ControlNet on each local window.

    ``model``: a diffusers ``ControlNetModel`` folder or hub id (loaded by
    :meth:`prepare` in the model's dtype, on its device, and checked against
    its UNet); ``None`` is refused by :meth:`prepare`, before any UNet work.
    ``image``: a path to a control image used for every phase instead of the
    previous phase's edges (read when the object is built).
    ``canny_sigma``: the canny thresholds' width around the median intensity.
    ``scale``, ``start``, ``end``: conditioning scale and the fractions of
    each phase's steps during which it applies. A loaded model can be given
    with :meth:`with_model`.
    """

    model: Optional[str] = option(None, type=str, optional=True, aliases=("controlnet",),
                                  help="a diffusers ControlNetModel folder or hub id of the model's family")
    image: Optional[str] = option(None, type=str, optional=True, aliases=("control_image",),
                                  help="this control image (resized to each phase) instead of the previous "
                                       "phase's canny edges")
    canny_sigma: float = option(DEFAULT_CANNY_SIGMA, minimum=0.0, maximum=1.0, aliases=("canny_sigma",),
                                help="canny thresholds at (1 -/+ this) x the median intensity of the previous "
                                     "phase's image")
    scale: float = option(0.5, minimum=0.0, aliases=("controlnet_scale",),
                          help="conditioning scale of the ControlNet's residuals")
    start: float = option(0.0, minimum=0.0, maximum=1.0, aliases=("controlnet_start",),
                          help="fraction of each phase's steps before it starts")
    end: float = option(1.0, minimum=0.0, maximum=1.0, aliases=("controlnet_end",),
                        help="fraction of each phase's steps after which it stops")
    _state: dict = attrs.field(factory=dict, init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.start >= self.end:
            raise SettingsError(f"start={self.start!r} with end={self.end!r} is not allowed: start must be below end")
        self._state.update(net=None, phase={}, pictures={}, image=None)
        if self.image is not None:
            from .images import load_image

            try:
                self._state["image"] = load_image(self.image)
            except SettingsError as exc:
                raise SettingsError(f"image={self.image!r} is not allowed: {str(exc).partition(': ')[2] or exc}; "
                                    "allowed: a readable image file (PNG, JPEG, ...)") from None

    def with_model(self, controlnet: Any) -> "ControlNetGuidance":
        """This guidance with an already loaded ControlNet (checked in :meth:`prepare`)."""
        self._state["net"] = controlnet
        return self

    @property
    def controlnet(self) -> Any:
        """The loaded ControlNet (``None`` before :meth:`prepare`)."""
        return self._state["net"]

    def prepare(self, adapter: Any) -> None:
        """Load the ControlNet (once) and check it against ``adapter``'s model
        (``adapter.load_controlnet`` / ``adapter.check_controlnet``)."""
        net = self._state["net"]
        if net is None and self.model is None:
            raise SettingsError("structure_guidance='controlnet' needs a ControlNet: --controlnet PATH_OR_ID "
                                "(a diffusers ControlNetModel folder or hub id matching the model's family)")
        if net is None:
            self._state["net"] = adapter.load_controlnet(self.model)
        else:
            adapter.check_controlnet(net, type(net).__name__)
        self._state["phase"].clear()
        self._state["pictures"].clear()

    def phase_control(self, request: StructureRequest) -> torch.Tensor:
        """The phase's whole control image ``(3, H, W)`` in ``[0, 1]`` (made once per phase)."""
        phase, pictures = self._state["phase"], self._state["pictures"]
        if request.scale not in phase:
            h, w = (n * request.vae_scale_factor for n in request.latent_size)
            if self._state["image"] is not None:
                picture = self._state["image"].resize((w, h), Image.BICUBIC)
            else:
                source = request.previous_image().convert("RGB").resize((w, h), Image.BICUBIC)
                picture = auto_canny(source, self.canny_sigma)
            pictures[request.scale] = picture
            phase[request.scale] = image_tensor(picture)
        return phase[request.scale]

    def control(self, request: StructureRequest) -> Optional[ControlViews]:
        crops = window_crops(self.phase_control(request), request)
        return ControlViews(crops, self._state["net"], self.scale, self.start, self.end)

    def pictures(self) -> tuple[tuple[int, Image.Image], ...]:
        """The control image of each phase so far, by scale."""
        return tuple(sorted(self._state["pictures"].items()))
