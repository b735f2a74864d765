"""The degradations a restoring projection compares through (issue #22): differentiable, on [N,3,S,S] in -1..1.

A face generator is a prior over faces. Compare its picture with an old photo only through what the photo has lost
(render/faces/degradation.py measures that) and the generator fills the rest in: colour for a black-and-white print,
detail for a small face, clean skin for a JPEG full of blocks. `project(G, photo, restore=r)` compares
degrade(G(latent)) with degrade(photo); the frames it keeps are G's own full pictures.

    degrade = degrader(restore, size=64, framing=G.framing)
    loss = lpips(degrade(G.synthesis(latent)), degrade(photo))

    grayscale  BT.601 luma in all three channels (a sepia print's tone is gone too: only brightness is compared);
               the colour, which the loss cannot see, is held to broad areas (`chroma_detail`, below)
    lowres     reduced to the face's native side (antialiased) and enlarged back to `size` (bilinear), with
               LOWRES_KEEP of the full picture added back: detail finer than the photo is compared weakly, not
               left free
    jpeg       a Gaussian blur of JPEG_BLUR of the block's side, which softens block edges and little else; and the
               colour held to broad areas, as for grayscale: a strong JPEG keeps the photo's colour in 16 px
               patches (4:2:0), and a compare that copies them paints them on the face
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from render.faces.degradation import Restore

LUMA = (0.299, 0.587, 0.114)


def grayscale(img: torch.Tensor) -> torch.Tensor:
    """[N,3,H,W] -> [N,3,H,W]: the luma in every channel."""
    w = torch.tensor(LUMA, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
    return (img * w).sum(1, keepdim=True).expand_as(img)


LOWRES_KEEP = 0.3  # share of the full picture in what a lowres restore compares. With none, the detail the photo
# lacks was free and ran into a grid at the generator's pixel pitch (LPIPS better than restore off for 2 of 4 demo
# faces, identity for none); 0.3 was better on LPIPS for all four and kept identity near restore off's; at 0.5 two
# faces lost the LPIPS gain (bench/RESULTS.md)


def lowres(img: torch.Tensor, side: int, keep: float = LOWRES_KEEP) -> torch.Tensor:
    """[N,3,S,S] reduced to side x side and enlarged back to S x S, plus `keep` of the picture as it is (the detail
    beyond `side` counts `keep` as much as the rest)."""
    from render.latent.project import resize  # project imports this module

    size = img.shape[-1]
    return img if side >= size else (1 - keep) * resize(resize(img, side), size) + keep * img


def blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """[N,C,H,W] Gaussian blur (separable, reflected edges) of standard deviation `sigma` pixels."""
    if sigma <= 0:
        return img
    r = max(1, int(round(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    c = img.shape[1]
    img = F.pad(img, (r, r, r, r), mode="reflect")
    img = F.conv2d(img, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(img, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


JPEG_BLUR = 0.125  # the JPEG restore's blur, as a share of the block's side. Half a block (the first design) took
# the face's own detail with the blocks: obama's photo at a third, 3.7 px blocks at 64 px, went 0.21 farther in
# identity than restore off; a quarter was still worse for three of four such photos; an eighth was closer than off
# on identity for all four, and under 3 px blocks it is next to no blur, where every blur tried had lost
# (bench/RESULTS.md)
CHROMA_WEIGHT = 10.0  # weight of the grayscale and JPEG restores' penalty on fine colour detail. Without it the
# colour a grayscale compare cannot see drifts into green and orange blotches that took the faces away from their
# people (identity worse for two of four demo faces); 3-10 kept colour and identity, more greys the face again. For
# quality-8 JPEG faces it brought identity closer for all four demo faces over 6 seeds (bench/RESULTS.md)
CHROMA_SIGMA = 1.5  # what counts as fine colour detail: finer than a Gaussian of this many pixels of a 64 px face


def chroma_detail(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """[N,3,H,W] -> [N]: the mean square of the colour (the picture minus its luma) left after a Gaussian blur of
    `sigma` px. Skin, hair and background take their colour in broad areas; the colour a grayscale photo does not
    constrain should too."""
    chroma = img - grayscale(img)
    return (chroma - blur(chroma, sigma)).square().mean(dim=(1, 2, 3))


def degrader(restore: Restore, size: int, framing: float = 1.0) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The degradation of `restore` for images compared at `size` px that show `framing` of the aligned crop's
    side (Generator.framing); None when nothing is restored."""
    if not restore:
        return None
    side = max(4, round(restore.native * framing))  # the face's native pixels across what the loss sees
    sigma = JPEG_BLUR * restore.block * size / framing  # in loss pixels

    def degrade(img: torch.Tensor) -> torch.Tensor:
        if "grayscale" in restore.kinds:
            img = grayscale(img)
        if "lowres" in restore.kinds:
            img = lowres(img, side)
        if "jpeg" in restore.kinds:
            img = blur(img, sigma)
        return img

    if "grayscale" in restore.kinds or "jpeg" in restore.kinds:
        # what `project` adds to the loss for the picture `img` (as compared, [N,3,size,size])
        degrade.penalty = lambda img: CHROMA_WEIGHT * chroma_detail(img, CHROMA_SIGMA * size / 64).sum()
    return degrade
