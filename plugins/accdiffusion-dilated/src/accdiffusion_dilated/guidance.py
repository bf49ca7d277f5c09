"""The global path: dilated sampling, with or without window interaction.

DemoFusion (Du et al., CVPR 2024) denoises the canvas of phase ``s`` as ``s*s``
interleaved native-size sub-latents (*dilated sampling*): sample
``hy * s + wx`` holds the latent pixels ``(hy + s i, wx + s j)``. The latents
the UNet sees are first smoothed with a Gaussian whose width decays with the
cosine factor. AccDiffusion (Lin et al., ECCV 2024, sec. 3.3) adds *window
interaction*: before each UNet call the samples exchange their values through
a random bijection at every position, and the outputs are put back with the
inverse bijection, so that the samples share information.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import attrs
import torch
import torch.nn.functional as F
from accdiffusion import GuidanceRequest, ViewBatchRequest
from accdiffusion.options import option
from accdiffusion.types import GlobalViews


def gaussian_kernel(
    kernel_size: int, sigma: float, *, dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None
) -> torch.Tensor:
    """The ``(kernel_size, kernel_size)`` Gaussian of DemoFusion's smoothing.

    The outer product of the 1-D kernel ``exp(-(x - (k-1)/2)^2 / (2 sigma^2))``,
    ``x = 0 .. k-1``, normalised to sum 1. ``sigma == 0`` gives its limit, the
    centred unit impulse.
    """
    x = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    if sigma > 0:
        one_d = torch.exp(-(x**2) / (2 * float(sigma) ** 2))
    else:
        one_d = (x == 0).to(torch.float64)
    one_d = one_d / one_d.sum()
    return torch.outer(one_d, one_d).to(dtype=dtype, device=device)


def pad_to_multiple(z: torch.Tensor, scale: int) -> torch.Tensor:
    """Zero-pad ``z`` ``(N, C, H, W)`` at the top and left to multiples of ``scale``."""
    h_pad = (scale - z.shape[-2] % scale) % scale
    w_pad = (scale - z.shape[-1] % scale) % scale
    return F.pad(z, (w_pad, 0, h_pad, 0))


def smooth_latents(z: torch.Tensor, scale: int, sigma: float) -> torch.Tensor:
    """DemoFusion's Gaussian smoothing of the global path's latents.

    Depthwise convolution of ``z`` ``(N, C, H, W)`` with the
    :func:`gaussian_kernel` of size ``2 scale - 1`` and width ``sigma`` (zero
    padding), then renormalised to the mean and (unbiased) standard deviation of
    ``z`` over the whole tensor: ``(f - mean f) / std f * std z + mean z``.
    """
    size = 2 * scale - 1
    channels = z.shape[1]
    kernel = gaussian_kernel(size, sigma, dtype=z.dtype, device=z.device)
    weight = kernel.expand(channels, 1, size, size)
    filtered = F.conv2d(z, weight, padding=size // 2, groups=channels)
    return (filtered - filtered.mean()) / filtered.std() * z.std() + z.mean()


def to_dilated_samples(z: torch.Tensor, scale: int) -> torch.Tensor:
    """The ``s*s`` dilated samples of a canvas ``z`` ``(1, C, H, W)``.

    ``z`` is first zero-padded at the top and left to multiples of ``s``
    (:func:`pad_to_multiple`); then ``D[hy * s + wx] = z[0, :, hy::s, wx::s]``.
    Returns ``(s*s, C, Hp/s, Wp/s)``.
    """
    padded = pad_to_multiple(z, scale)
    _, channels, height, width = padded.shape
    h, w = height // scale, width // scale
    grid = padded.reshape(channels, h, scale, w, scale)
    return grid.permute(2, 4, 0, 1, 3).reshape(scale * scale, channels, h, w)


def from_dilated_samples(d: torch.Tensor, scale: int, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`to_dilated_samples`: interleave ``d`` ``(s*s, C, h, w)``
    back into the padded canvas and crop the padding to ``shape``'s last two
    sizes ``(H, W)``. Returns ``(1, C, H, W)``."""
    _, channels, h, w = d.shape
    grid = d.reshape(scale, scale, channels, h, w).permute(2, 3, 0, 4, 1)
    padded = grid.reshape(1, channels, h * scale, w * scale)
    height, width = int(shape[-2]), int(shape[-1])
    return padded[..., h * scale - height :, w * scale - width :]


def random_permutation(
    shape: Sequence[int], generator: torch.Generator, device: Optional[torch.device] = None
) -> torch.Tensor:
    """One random bijection of the ``shape[0]`` samples at every other index (window interaction).

    ``perm = argsort(rand(shape), dim=0)``: the uniform noise is drawn from
    ``generator`` on its device (so a seed gives the same bijections on every
    device), then moved to ``device`` (default: the generator's) and sorted
    there; ``perm[:, c, y, x]`` is a permutation of ``0 .. shape[0] - 1``.
    """
    noise = torch.rand(tuple(shape), generator=generator, device=generator.device)
    if device is not None:
        noise = noise.to(device)
    return noise.argsort(dim=0)


def apply_permutation(d: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Exchange values between samples: ``out[i, c, y, x] = d[perm[i, c, y, x], c, y, x]``."""
    return d.gather(0, perm.to(d.device))


def invert_permutation(out: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Put permuted values back: the inverse of :func:`apply_permutation` for the same ``perm``."""
    return torch.empty_like(out).scatter_(0, perm.to(out.device), out)


@attrs.frozen
class DilatedGuidance:
    """The ``dilated`` global guidance: DemoFusion's dilated sampling.

    ``sigma``: width of the Gaussian smoothing, scaled by
    ``c3 = 0.99 cosine_factor ** cosine_scale_3 + 0.01``;
    ``gaussian_smoothing``: smooth the latents the UNet sees.
    """

    sigma: float = option(0.8, minimum=0.0, aliases=("sigma",),
                          help="Gaussian smoothing sigma of the dilated path")
    cosine_scale_3: float = option(1.0, minimum=0.0, aliases=("cosine_scale_3",),
                                   help="Gaussian-smoothing exponent cs3")
    gaussian_smoothing: bool = option(True, aliases=("gaussian_smoothing",),
                                      help="Gaussian smoothing of the dilated path's input")

    def permutation(
        self, shape: torch.Size, generator: Optional[torch.Generator], device: Optional[torch.device] = None
    ) -> Optional[torch.Tensor]:
        """The bijection applied to the samples before the UNet; ``None``: none."""
        return None

    def views(self, request: GuidanceRequest) -> GlobalViews:
        """The canvas's dilated samples (smoothed, permuted) for the sampler to
        evaluate with the step's local windows, and how to put their guided
        outputs back (inverse permutation, interleave, crop the padding)."""
        z = request.latents
        if z.dim() != 4 or z.shape[0] != 1:
            raise ValueError(f"global guidance expects latents of shape (1, C, H, W), got {tuple(z.shape)}")
        s = request.scale
        padded = pad_to_multiple(z, s)
        if self.gaussian_smoothing:
            c3 = 0.99 * request.cosine_factor**self.cosine_scale_3 + 0.01
            padded = smooth_latents(padded, s, self.sigma * c3)
        samples = to_dilated_samples(padded, s)
        perm = self.permutation(samples.shape, request.generator, samples.device)
        if perm is not None:
            samples = apply_permutation(samples, perm)
        shape = tuple(z.shape)

        def assemble(out: torch.Tensor) -> torch.Tensor:
            if perm is not None:
                out = invert_permutation(out, perm)
            return from_dilated_samples(out, s, shape)

        return GlobalViews(ViewBatchRequest(latents=samples, guidance_scale=request.guidance_scale), assemble)

    def predict(self, request: GuidanceRequest) -> torch.Tensor:
        """Guided model output ``(1, C, H, W)`` of the whole canvas from its dilated
        samples, evaluated through ``request.denoise`` (the sampler uses :meth:`views`)."""
        gv = self.views(request)
        return gv.assemble(request.denoise(gv.batch))


@attrs.frozen
class WindowInteractionGuidance(DilatedGuidance):
    """The ``window_interaction`` global guidance: AccDiffusion's dilated sampling
    with window interaction (sec. 3.3).

    As :class:`DilatedGuidance`, but at every step the ``s*s`` samples exchange
    their values through one random bijection per position ``(c, y, x)``
    before the UNet, and the outputs are returned to their samples with its
    inverse. The bijections come from the request's generator, which is
    therefore required.
    """

    def permutation(
        self, shape: torch.Size, generator: Optional[torch.Generator], device: Optional[torch.device] = None
    ) -> torch.Tensor:
        """A fresh :func:`random_permutation` of the samples from ``generator``, sorted on ``device``."""
        if generator is None:
            raise ValueError("window_interaction draws its bijections from GuidanceRequest.generator, which is None")
        return random_permutation(shape, generator, device)
