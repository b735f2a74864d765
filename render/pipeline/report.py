"""Pictures that tell an artist how a render went: the contact sheet and the loss curves.

contact.png has one row per subject: the aligned photo, a few frames of its edge (its projection from the previous
subject's face, what the loop shows), and its home (its projection from the mean face, where its segment of the loop
ends), labelled with the subject's name and the home's LPIPS-VGG to the photo (the standard five-layer metric, at the
loss's side, whatever layers the loss summed). loss.png plots every subject's loss per step, edges and homes.
"""

from __future__ import annotations

import functools
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

import torch

from render.latent.frames import resample, synthesize, to_uint8
from render.models.lpips import load_lpips
from render.latent.project import loss_side, prepare_target, resize
from sequences.atomic import write_atomic

CELL = 128  # contact-sheet cell side in pixels
PAD = 6
LABEL = 18


@functools.cache
def font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The sheets' lettering: DejaVu Sans (shipped with matplotlib), which has the accents and scripts of names such
    as "Zoë", "José" or "Łucja" that Pillow's default font draws as boxes; Pillow's default where it is missing."""
    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf"), 10)
    except (ImportError, OSError):
        return ImageFont.load_default()


def fit(text: str, width: int) -> str:
    """`text`, cut with ".." to at most `width` pixels in font()."""
    if font().getlength(text) <= width:
        return text
    while text and font().getlength(text + "..") > width:
        text = text[:-1]
    return text + ".."


def save_png(path: Path, image: np.ndarray | Image.Image, *, text: dict[str, str] | None = None,
             if_changed: bool = False) -> None:
    """Write a PNG atomically, with `text` as its tEXt chunks; `if_changed`: not when the file holds it already."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    info = PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    write_atomic(path, buf.getvalue(), if_changed=if_changed)


def labelled_grid(rows: list[tuple], *, cell: int = CELL) -> np.ndarray:
    """uint8 sheet of labelled rows, each (label, [uint8 tiles]) or (label, [tiles], [captions above the tiles]);
    labels may have several lines, the label column is as wide as the longest line (none when all are empty)."""
    lines = [line for row in rows for line in row[0].split("\n") if line]
    label_w = 10 + round(max(font().getlength(line) for line in lines)) if lines else 0
    cols = max(len(row[1]) for row in rows)
    heights = [cell + (LABEL - 2 if len(row) > 2 and row[2] else 0) for row in rows]
    img = Image.new("RGB", (label_w + PAD + cols * (cell + PAD), PAD + sum(h + PAD for h in heights)), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    y = PAD
    for row, h in zip(rows, heights):
        label, tiles, captions = row[0], row[1], (row[2] if len(row) > 2 else None) or []
        top = y + h - cell
        draw.multiline_text((PAD, top + cell // 2 - 6 * (label.count("\n") + 1)), label, fill=(220, 220, 220),
                            font=font())
        for c, tile in enumerate(tiles):
            x = label_w + PAD + c * (cell + PAD)
            if c < len(captions):
                draw.text((x + 2, y + 1), fit(captions[c], cell - 4), fill=(255, 220, 120), font=font())
            img.paste(Image.fromarray(resample(tile, cell, "lanczos")), (x, top))
        y += h + PAD
    return np.asarray(img)


def write_contact_sheet(path: Path, G, faces, edges, homes, *, stages: int = 4) -> None:
    """Per subject: aligned input | up to `stages` frames of its edge, evenly spaced from its first, all different
    (fewer when it kept fewer) | its home (the face its segment ends on)."""
    cols = stages + 2
    width = PAD + cols * (CELL + PAD)
    height = PAD + len(faces) * (CELL + LABEL + PAD)
    sheet = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for row, (face, proj, home) in enumerate(zip(faces, edges, homes)):
        k = len(proj.latents)
        picks = sorted({round(i * (k - 1) / stages) for i in range(stages)})
        frames = synthesize(G, torch.cat([proj.latents[picks], home.final]))
        photo = to_uint8(prepare_target(face.image, torch.device("cpu"), G.framing))[0]  # as the projection saw it
        final = final_lpips(G, photo, frames[-1])
        cells = dict(enumerate([photo, *frames[:-1]])) | {cols - 1: frames[-1]}  # the home in the last column
        y = PAD + row * (CELL + LABEL + PAD)
        for col, img in cells.items():
            x = PAD + col * (CELL + PAD)
            sheet.paste(Image.fromarray(resample(img, CELL, "lanczos")), (x, y + LABEL))
            restored = col == 0 and getattr(face, "restore", None)
            if restored:  # a restored subject: a blue frame, and what its projections compared through
                draw.rectangle((x - 2, y + LABEL - 2, x + CELL + 1, y + LABEL + CELL + 1), outline=(90, 170, 255),
                               width=2)
                draw.rectangle((x, y + LABEL + CELL - 14, x + CELL - 1, y + LABEL + CELL - 1), fill=(0, 0, 0))
                draw.text((x + 2, y + LABEL + CELL - 13), "restored " + "+".join(
                    {"grayscale": "gray"}.get(k, k) for k in face.restore.kinds), fill=(130, 200, 255), font=font())
            if col == 0:
                # a visitor's name (file and time) is longer than a cell: cut, so it does not run into the next
                caption, colour = fit(face.name, CELL - 4), (255, 220, 120)
            elif col == cols - 1:
                caption, colour = f"home  LPIPS {final:.3f}", (200, 200, 200)
            else:
                caption, colour = f"edge step {int(proj.steps[picks[col - 1]])}", (200, 200, 200)
            draw.text((x + 2, y + 3), caption, fill=colour, font=font())
    save_png(path, sheet)


def final_lpips(G, photo: np.ndarray, frame: np.ndarray) -> float:
    """LPIPS-VGG (all five layers, float32) between two uint8 [H, W, 3] faces, resized to the loss's side."""
    side = loss_side(G)
    a, b = (resize(prepare_target(img, G.device), side) for img in (photo, frame))
    with torch.no_grad():
        return float(load_lpips("vgg", G.device)(a, b)[0])


def write_loss_plot(path: Path, names: list[str], homes, edges) -> None:
    """Loss per step for every subject: its edge solid, its home dashed, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():  # a name in a script DejaVu lacks: boxes in the legend, not a warning per glyph
        warnings.filterwarnings("ignore", "Glyph .* missing", UserWarning)
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        for i, name in enumerate(names):
            color = f"C{i % 10}"
            ax.plot(edges[i].losses, color=color, label=name)
            ax.plot(homes[i].losses, color=color, linestyle="--", alpha=0.5)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (LPIPS + regularisers)")
        ax.set_title("loss per subject (solid: edge, from the previous face; dashed: home, from the mean)")
        ax.grid(alpha=0.3)
        if len(names) <= 24:  # a legend of more names fills the plot and names none readably
            ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
    write_atomic(path, buf.getvalue())
