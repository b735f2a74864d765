"""Edit directions without labels: measure attributes on sampled faces, fit one linear direction per attribute.

    dirs = load_directions(G, cache_dir=".cache/directions")        # {"smile": [D], "yaw": [D], ...}
    edited = apply_directions(latent, dirs, {"smile": 1.5, "yaw": -0.5})   # [N, D]
    dirs["mine"] = load_user_direction("my_direction.npy", G)

`python run.py directions` fits them (`fit_directions`): sample faces from G, find each face's 68 landmarks, measure
the attributes of `render.faces.attributes`, and regress each standardised attribute on the standardised latent with ridge
regression (the ridge strength chosen per attribute by leave-one-out error, in closed form from one SVD). A direction
is the regression's gradient in the latent, scaled so that amount 1 moves the latent by one standard deviation of the
sampled latents along it. Directions are cached per generator fingerprint as `<cache_dir>/<fingerprint>.npz`.

The fit is linear and the attributes come from dlib on (for the embedded generator) 64 px faces, so some directions
are noise: `run.py directions` moves faces along each direction, re-measures, and reports which ones respond.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from render.faces.attributes import ATTRIBUTES, measure
from render.models.base import generator_fingerprint
from render.models.base import Generator
from sequences.atomic import UNREADABLE

log = logging.getLogger(__name__)

# phrase -> (direction name, amount). "left" / "right" are the viewer's: "looking left" turns the face toward the
# image's left edge.
VOCABULARY: dict[str, tuple[str, float]] = {
    "smiling": ("smile", 1.5),
    "smile": ("smile", 1.5),
    "not smiling": ("smile", -1.5),
    "serious": ("smile", -1.5),
    "open mouth": ("mouth_open", 1.5),
    "mouth open": ("mouth_open", 1.5),
    "closed mouth": ("mouth_open", -1.5),
    "wide mouth": ("mouth_width", 1.5),
    "looking left": ("yaw", -1.5),
    "looking right": ("yaw", 1.5),
    "looking up": ("pitch", 1.5),
    "looking down": ("pitch", -1.5),
    "tilted head": ("roll", 1.5),
    "wide face": ("face_width", 1.5),
    "narrow face": ("face_width", -1.5),
    "long chin": ("chin_length", 1.5),
    "short chin": ("chin_length", -1.5),
    "wide nose": ("nose_width", 1.5),
    "narrow nose": ("nose_width", -1.5),
    "eyes closed": ("eye_open", -2.0),
    "closed eyes": ("eye_open", -2.0),
    "wide eyes": ("eye_open", 1.5),
    "raised eyebrows": ("brow_raise", 1.5),
    "bright skin": ("skin_brightness", 1.5),
    "light skin": ("skin_brightness", 1.5),
    "dark skin": ("skin_brightness", -1.5),
    "dark hair": ("hair_darkness", 1.5),
    "light hair": ("hair_darkness", -1.5),
    "blond hair": ("hair_darkness", -1.5),
}


class DirectionsError(ValueError):
    """Directions missing, unreadable or of the wrong shape; the message is one line naming the file."""


# ------------------------------------------------------------------------------------------------------ fitting (pure)


def thin_svd(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X [m, n] = U diag(S) V^T with only the non-zero singular values, from the eigenvectors of the smaller Gram
    matrix (much faster than LAPACK's SVD for the wide W+ latents of StyleGAN)."""
    Xt = torch.from_numpy(np.ascontiguousarray(X, np.float64))
    wide = X.shape[0] <= X.shape[1]
    evals, vecs = torch.linalg.eigh(Xt @ Xt.T if wide else Xt.T @ Xt)
    keep = evals > evals.max().clamp_min(1e-300) * 1e-10
    S = evals[keep].sqrt()  # [r]
    if wide:
        U = vecs[:, keep]  # [m, r]
        V = Xt.T @ U / S  # [n, r]
    else:
        V = vecs[:, keep]
        U = Xt @ V / S
    return U.numpy(), S.numpy(), V.numpy()


def ridge_directions(latents: np.ndarray, targets: np.ndarray, *, alphas=(1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)):
    """Fit one linear direction per column of `targets`.

    latents [M, D] float, targets [M, K] (nan = not measured on that face). Both are standardised (latent entries
    that never vary get weight 0). Ridge strengths are `alphas` times the mean squared singular value, chosen per
    target by leave-one-out error. Returns (directions [K, D] scaled so that amount 1 is one sampled standard
    deviation along the direction, cv_r2 [K] the leave-one-out R^2: the share of the attribute's variance
    predicted on faces left out of the fit (<= 0: not predictable from the latent),
    alpha [K] the relative strength chosen).
    """
    X = np.asarray(latents, np.float64)
    Y = np.asarray(targets, np.float64)
    M, D = X.shape
    K = Y.shape[1]
    dirs, cv_r2, chosen = np.zeros((K, D)), np.full(K, np.nan), np.full(K, np.nan)
    valid = ~np.isnan(Y)  # [M, K]
    for mask_key in {valid[:, k].tobytes() for k in range(K)}:  # one SVD per distinct set of measured faces
        rows = np.frombuffer(mask_key, dtype=bool)
        cols = [k for k in range(K) if valid[:, k].tobytes() == mask_key]
        if rows.sum() < 10:
            continue
        Xr = X[rows]
        mean, std = Xr.mean(0), Xr.std(0)
        live = std > 1e-8 * max(std.max(), 1e-30)
        Xs = (Xr[:, live] - mean[live]) / std[live]  # [m, D'] standardised
        U, S, V = thin_svd(Xs)  # Xs = U diag(S) V^T
        scale = float(np.mean(S**2))
        for k in cols:
            y = Y[rows, k]
            ys = (y - y.mean()) / max(y.std(), 1e-12)  # [m]
            Uty = U.T @ ys
            best = None
            for a in alphas:
                shrink = S**2 / (S**2 + a * scale)  # [r]
                fit = U @ (shrink * Uty)  # [m] in-sample prediction
                hat = 1.0 / len(ys) + (U**2) @ shrink  # [m] diagonal of the hat matrix (with the intercept)
                loo = ys - (ys - fit) / np.clip(1.0 - hat, 1e-9, None)  # exact leave-one-out predictions
                err = float(np.mean((ys - loo) ** 2))
                if best is None or err < best[0]:
                    best = (err, a, loo, V @ (S / (S**2 + a * scale) * Uty))
            _, a, loo, beta = best  # beta [D'] on standardised latents
            grad = np.zeros(D)
            grad[live] = beta / std[live]  # d attribute / d latent, raw latent units
            unit = grad / max(np.linalg.norm(grad), 1e-30)
            spread = float(np.std((Xr - mean) @ unit))  # sampled standard deviation along the direction
            dirs[k] = unit * spread
            chosen[k] = a
            cv_r2[k] = 1.0 - float(np.mean((ys - loo) ** 2))  # ys has unit variance
    return dirs, cv_r2, chosen


def response_slopes(amounts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How attributes move along a direction.

    amounts [A]; values [B, A, K] measured on B faces moved by each amount (nan = no face found). Each face's own
    mean is removed, so the slope [K] is the within-face change per unit amount; r [K] is the pooled correlation.
    """
    a = np.broadcast_to(np.asarray(amounts, np.float64)[None, :, None], values.shape)
    ok = ~np.isnan(values)
    slopes, rs = np.full(values.shape[2], np.nan), np.full(values.shape[2], np.nan)
    for k in range(values.shape[2]):
        xs, ys = [], []
        for b in range(values.shape[0]):
            m = ok[b, :, k]
            if m.sum() >= 2:
                xs.append(a[b, m, k] - a[b, m, k].mean())
                ys.append(values[b, m, k] - values[b, m, k].mean())
        if not xs:
            continue
        x, y = np.concatenate(xs), np.concatenate(ys)
        if x.var() > 0:
            slopes[k] = float((x * y).sum() / (x * x).sum())
            rs[k] = float(np.corrcoef(x, y)[0, 1]) if y.std() > 0 else 0.0
    return slopes, rs


# ------------------------------------------------------------------------------------------------------ sampling


@dataclass
class Measured:
    latents: torch.Tensor  # [M, D] faces whose landmarks were found
    values: np.ndarray  # [M, K] attributes in ATTRIBUTES order
    tried: int  # faces sampled (M of them had a detectable face)


def measure_latents(G: Generator, latents: torch.Tensor, *, batch: int = 32, progress=None) -> np.ndarray:
    """latents [N, D] -> attributes [N, K] (a row of nan where no face is found)."""
    from render.faces.align import landmarks_of
    from render.latent.frames import synthesize

    out = np.full((len(latents), len(ATTRIBUTES)), np.nan)
    for i in range(0, len(latents), batch):
        for j, img in enumerate(synthesize(G, latents[i : i + batch])):  # uint8 [R,R,3]
            lm = landmarks_of(img)
            if lm is not None:
                out[i + j] = list(measure(img, lm).values())
            if progress is not None:
                progress(1)
    return out


def sample_and_measure(G: Generator, n: int, seed: int, truncation_psi: float, progress=None) -> Measured:
    latents = G.sample(n, seed, truncation_psi).float().cpu()  # [n, D]
    values = measure_latents(G, latents, progress=progress)
    found = ~np.isnan(values).all(axis=1)
    return Measured(latents[torch.from_numpy(found)], values[found], n)


def move_and_measure(G: Generator, bases: torch.Tensor, direction: torch.Tensor,
                     amounts) -> tuple[np.ndarray, np.ndarray]:
    """Move each base latent [B, D] by every amount along `direction` [D] and re-measure.

    Returns (images uint8 [B, A, R, R, 3], attributes [B, A, K], nan where no face is found).
    """
    from render.faces.align import landmarks_of
    from render.latent.frames import synthesize

    a = torch.tensor(list(amounts), dtype=torch.float32)  # [A]
    lat = bases[:, None, :] + a[None, :, None] * direction.float().cpu()[None, None, :]  # [B, A, D]
    images = synthesize(G, lat.reshape(-1, lat.shape[-1]))  # [B*A, R, R, 3]
    values = np.full((len(images), len(ATTRIBUTES)), np.nan)
    for i, img in enumerate(images):
        lm = landmarks_of(img)
        if lm is not None:
            values[i] = list(measure(img, lm).values())
    B, A = lat.shape[:2]
    return images.reshape(B, A, *images.shape[1:]), values.reshape(B, A, -1)


AMOUNTS = (-2.0, -1.0, 0.0, 1.0, 2.0)


def fit_directions(G: Generator, *, samples: int, seed: int, truncation_psi: float, response_faces: int,
                   min_response: float, min_r: float, progress=None) -> tuple[DirectionSet, dict[str, np.ndarray]]:
    """Sample, measure, fit, then move held-out faces along every direction and re-measure.

    Returns the DirectionSet (stats per direction: cv_r2, response = own attribute's change per unit amount in
    standard deviations of that attribute over the samples, response_r, side_effects = the same for every other
    attribute, correlations = the attributes' correlations over the samples, found = share of moved faces whose
    landmarks were found, reliable) and per direction the moved faces, uint8 [B, len(AMOUNTS), R, R, 3].
    """
    names = list(ATTRIBUTES)
    data = sample_and_measure(G, samples, seed, truncation_psi, progress=progress)
    if len(data.latents) < 20:
        raise DirectionsError(f"only {len(data.latents)} of {samples} sampled faces had detectable landmarks; "
                              "cannot fit directions (try a lower directions.truncation)")
    dirs, cv_r2, alpha = ridge_directions(data.latents.double().numpy(), data.values)
    mean, std = np.nanmean(data.values, 0), np.nanstd(data.values, 0)  # [K]
    corr = np.ma.corrcoef(np.ma.masked_invalid(data.values), rowvar=False).filled(np.nan)  # [K, K]
    held = sample_and_measure(G, 3 * response_faces, seed + 7919, truncation_psi)  # faces not used in the fit
    bases = held.latents[:response_faces]
    stats: dict = {"_fit": {"samples": samples, "measured": len(data.latents), "seed": seed,
                            "truncation_psi": truncation_psi, "response_faces": len(bases), "amounts": AMOUNTS}}
    strips = {}
    for k, name in enumerate(names):
        if not np.any(dirs[k]):
            stats[name] = {"reliable": False, "note": "not fitted (too few measurements)"}
            continue
        images, values = move_and_measure(G, bases, torch.from_numpy(dirs[k]).float(), AMOUNTS)
        slopes, rs = response_slopes(np.array(AMOUNTS), values)
        slopes = slopes / np.where(std > 0, std, np.nan)  # [K] std per unit amount
        own, own_r = float(slopes[k]), float(rs[k])
        stats[name] = {
            "meaning": ATTRIBUTES[name], "cv_r2": round(float(cv_r2[k]), 3), "alpha": float(alpha[k]),
            "response": round(own, 3), "response_r": round(own_r, 3),
            "found": round(float((~np.isnan(values[..., k])).mean()), 3),
            "reliable": bool(own >= min_response and own_r >= min_r),
            "side_effects": {n: round(float(slopes[j]), 3) for j, n in enumerate(names) if j != k},
            "correlations": {n: round(float(corr[k, j]), 3) for j, n in enumerate(names) if j != k},
            "attribute_mean": float(mean[k]), "attribute_std": float(std[k]),
        }
        strips[name] = images
        log.info("%s: response %+.2f std per unit (r %.2f), leave-one-out R2 %.2f", name, own, own_r, cv_r2[k])
    return DirectionSet(names, dirs.astype(np.float32), stats), strips


# ------------------------------------------------------------------------------------------------------ cache and use


@dataclass
class DirectionSet:
    names: list[str]
    directions: np.ndarray  # [K, D] float32
    stats: dict = field(default_factory=dict)  # per name: cv_r2, alpha, response slopes, reliable, ...


def cache_path(G: Generator, cache_dir: str | Path) -> Path:
    return Path(cache_dir) / f"{generator_fingerprint(G)}.npz"


def save_directions(G: Generator, cache_dir: str | Path, ds: DirectionSet) -> Path:
    import io

    from sequences.atomic import write_atomic

    path = cache_path(G, cache_dir)
    buf = io.BytesIO()
    np.savez_compressed(buf, names=np.array(ds.names), directions=ds.directions.astype(np.float32),
                        stats=np.array(json.dumps(ds.stats)), fingerprint=np.array(generator_fingerprint(G)))
    write_atomic(path, buf.getvalue())
    return path


def read_directions(G: Generator, *, cache_dir: str | Path, fit: str = "python run.py directions") -> DirectionSet:
    """The cached DirectionSet of G. `cache_dir` may be the directions folder or the folder holding `directions/`;
    `fit` is the command that fits them, for the message when there are none."""
    path = cache_path(G, cache_dir)
    if not path.exists() and cache_path(G, Path(cache_dir) / "directions").exists():
        path = cache_path(G, Path(cache_dir) / "directions")
    if not path.exists():
        raise DirectionsError(f"{path}: no edit directions for this generator ({G.name}); "
                              f"run `{fit}` first to fit them")
    try:
        with np.load(path, allow_pickle=False) as z:
            names, dirs, stats = [str(s) for s in z["names"]], z["directions"].copy(), json.loads(str(z["stats"]))
    except UNREADABLE as e:
        raise DirectionsError(f"{path}: unreadable directions cache ({str(e) or type(e).__name__}); "
                              f"run `{fit}` again") from None
    if dirs.shape != (len(names), G.layout.dim):
        raise DirectionsError(f"{path}: directions have shape {dirs.shape}, expected ({len(names)}, {G.layout.dim})")
    return DirectionSet(names, dirs, stats)


def load_directions(G: Generator, *, cache_dir: str | Path, fit: str = "python run.py directions"
                    ) -> dict[str, torch.Tensor]:
    """{name: direction [D] float32 on CPU} fitted for G by `run.py directions`; DirectionsError if none."""
    ds = read_directions(G, cache_dir=cache_dir, fit=fit)
    return {name: torch.from_numpy(d.copy()) for name, d in zip(ds.names, ds.directions)}


def apply_directions(latent: torch.Tensor, directions: dict[str, torch.Tensor],
                     amounts: dict[str, float]) -> torch.Tensor:
    """latent [N, D] + sum of amount * direction -> [N, D] (on the latent's device and dtype)."""
    out = latent.clone()
    for name, amount in amounts.items():
        if name not in directions:
            raise DirectionsError(f"unknown direction {name!r} (known: {', '.join(sorted(directions))})")
        d = directions[name].to(device=latent.device, dtype=latent.dtype).reshape(-1)
        if d.numel() != latent.shape[-1]:
            raise DirectionsError(f"direction {name!r} has {d.numel()} values, the latent has {latent.shape[-1]}")
        out = out + float(amount) * d
    return out


def load_user_direction(path: str | Path, G: Generator) -> torch.Tensor:
    """A direction from a .npy file -> [D] float32.

    Accepted shapes: [D] or [1, D] (the flat latent); for generators whose layers all have the same width (StyleGAN:
    num_ws copies of w) also [w_dim] or [1, w_dim] (one w direction, applied to every layer) and [num_ws, w_dim].
    """
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DirectionsError(f"{path}: direction file not found") from None
    except OSError as e:
        raise DirectionsError(f"{path}: not a readable .npy array ({e.strerror or e})") from None
    except UNREADABLE:  # np.load's words for any other file are about pickles or zips, which would only mislead
        arr = None
    if not isinstance(arr, np.ndarray):  # a photo, a text file, an .npz archive
        raise DirectionsError(f"{path}: not a readable .npy array of numbers (a direction is saved with np.save)")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise DirectionsError(f"{path}: direction must hold numbers, not {arr.dtype}")
    arr = arr.astype(np.float32)
    sizes, D = G.layout.sizes, G.layout.dim
    same = len(set(sizes)) == 1
    if arr.size == D and (arr.ndim == 1 or arr.shape[0] == 1 or arr.shape == (len(sizes), sizes[0])):
        flat = arr.reshape(D)
    elif same and arr.size == sizes[0] and (arr.ndim == 1 or arr.shape == (1, sizes[0])):
        flat = np.tile(arr.reshape(-1), len(sizes))
    else:
        hint = f" or [{sizes[0]}] (one w)" if same else ""
        raise DirectionsError(f"{path}: direction has shape {list(arr.shape)}, expected [{D}]{hint} "
                              f"for generator {G.name}")
    if not np.isfinite(flat).all():
        raise DirectionsError(f"{path}: direction holds nan or inf values")
    if not np.any(flat):
        raise DirectionsError(f"{path}: direction is all zeros")
    return torch.from_numpy(flat)
