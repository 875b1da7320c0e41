"""Benchmark of the palette task: every method and peer in process, then the service over HTTP.

Floors (in process, from the bytes of a 1024x768 JPEG photo to a palette of 5 colours, everything the service does
but HTTP): k-means, k-medians, the generator (ONNX Runtime), colorthief and pylette (their default modes). Each
floor row also carries the method's quality on the held-out photos (mean CIEDE2000 from each pixel to its nearest
colour; smallest CIEDE2000 between two colours) and on held-out synthetic images (distance from each planted colour
to the palette), measured in the same run. Service: the default method at concurrency 1 / 8 / 32.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from benchmarks import harness
from benchmarks.harness import find, time_calls
from benchmarks.report import row
from tasks import palette as P
from tasks.images import ImageLimits, decode_image
from tasks.spec import PaletteSpec

ROUTE = "extract"
CONTENT_TYPE = "image/jpeg"
SIZE = (1024, 768)
N_COLORS = 5


def sample_images(spec: PaletteSpec) -> list[bytes]:
    """The held-out scenes at 1024x768 as JPEG (quality 90), the way a photo arrives."""
    from training.datasets.swatches import HELD_OUT_PHOTOS, photo

    out = []
    for name in HELD_OUT_PHOTOS:
        buf = io.BytesIO()
        photo(name).resize(SIZE, Image.Resampling.LANCZOS).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def floor_rows(spec: PaletteSpec, entry, payloads: list[bytes], device: str, seconds: float) -> list[dict]:
    from services.backends import OnnxBackend
    from tasks.store import verified_file
    from training import palette as T

    runner = OnnxBackend(verified_file(entry, "model.onnx"), device)
    offsets = P.head_offsets(spec)
    limits = ImageLimits(min_side=spec.min_side)
    quality = T.evaluate(spec, runner, harness.QUALITY_IMAGES, entry.info.metadata["config"]["test_seed"], N_COLORS)

    def ours(data: bytes, method: str) -> None:
        img = decode_image(data, limits, draft=2 * spec.thumbnail)
        thumb = P.thumbnail(img, spec.thumbnail)
        pixels = P.image_pixels(thumb, spec)
        if method == "generator":
            colours = runner(P.generator_input(thumb, spec)[None])[0, offsets[N_COLORS] : offsets[N_COLORS] + N_COLORS]
        else:
            colours = P.extract(pixels, N_COLORS, method)
        P.swatch_png(P.finish(colours, pixels))

    def peer(data: bytes, method: str) -> None:
        with Image.open(io.BytesIO(data)) as img:
            T.peer_colours(method, img.convert("RGB"), N_COLORS)

    rows = []
    for method in (*spec.methods, *T.PEERS):
        turn = iter(range(10**9))
        fn = peer if method in T.PEERS else ours

        def step(fn=fn, method=method, turn=turn) -> None:
            fn(payloads[next(turn) % len(payloads)], method)

        lat = time_calls(step, seconds)
        name = f"generator/{runner.name}/{runner.device}" if method == "generator" else method
        q = quality["photos"][method]
        rows.append(
            row(
                "floor",
                name,
                1,
                1,
                lat,
                1 / float(np.mean(lat)),
                input=f"jpeg {SIZE[0]}x{SIZE[1]}",
                mean_delta_e=round(q["mean_delta_e"], 3),
                min_pair_delta_e=round(q["min_pair_delta_e"], 2),
                planted_delta_e=round(quality["synthetic_planted_delta_e"][method], 3),
            )
        )
        print(f"floor {name:28s} p50 {rows[-1]['p50_ms']:8.2f} ms  mean dE2000 {q['mean_delta_e']:.3f}")
    return rows


def summary(rows: list[dict], concurrencies: list[int]) -> list[str]:
    floors = {r["backend"].split("/")[0]: r for r in rows if r["path"] == "floor"}
    peers = ("colorthief", "pylette")
    peer = min(peers, key=lambda m: floors[m]["mean_delta_e"])
    ours = min(("kmeans", "kmedians", "generator"), key=lambda m: floors[m]["mean_delta_e"])
    s1 = find(rows, path="service", concurrency=1, batching=True)
    gain = 1 - floors[ours]["mean_delta_e"] / floors[peer]["mean_delta_e"]
    gen = floors["generator"]["mean_delta_e"] / floors["kmeans"]["mean_delta_e"]
    return [
        f"held-out photos (4 scikit-image scenes whole and in quadrants, 20 images), {N_COLORS} colours: best method "
        f"{ours} mean CIEDE2000 {floors[ours]['mean_delta_e']:.3f} vs {floors[peer]['mean_delta_e']:.3f} for the "
        f"better peer ({peer}): {100 * gain:.1f}% lower",
        f"learned generator vs k-means baseline: mean CIEDE2000 {floors['generator']['mean_delta_e']:.3f} vs "
        f"{floors['kmeans']['mean_delta_e']:.3f} ({gen:.2f}x): the generator "
        + ("does not beat" if gen > 1 else "beats")
        + " k-means",
        f"service p50 at concurrency 1, {SIZE[0]}x{SIZE[1]} JPEG, default method ({s1['backend']}): "
        f"{s1['p50_ms']:.1f} ms; in process {floors[ours]['p50_ms']:.1f} ms",
        "quality columns: mean_delta_e = mean CIEDE2000 from each pixel (20,000 sampled at full resolution) to its "
        "nearest palette colour; min_pair_delta_e = smallest CIEDE2000 between two palette colours; planted_delta_e "
        f"= distance from each planted colour of {harness.QUALITY_IMAGES} held-out synthetic images to the nearest "
        "palette colour",
        "batching only affects the generator; the default method is computed per request",
    ]
