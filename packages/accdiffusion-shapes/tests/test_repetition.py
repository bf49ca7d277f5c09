"""The repetition benchmark's counting and summary, on clean renders."""

import json
import os

from PIL import Image

from accdiffusion_shapes.repetition import PHASE1, count_named, markdown, summarize, summarize_folder
from accdiffusion_shapes.world import Scene, SceneObject, render


def _image(*objects, background="white", size=128):
    return render(Scene(background, tuple(objects)), size=size, supersample=2)


def test_one_named_object_is_exact():
    img = _image(SceneObject("circle", "red", "large", 0.3, 0.3))
    c = count_named(img, {("red", "circle"): 1}, native=32)
    assert (c["named"], c["shape_matched"], c["expected"], c["total"], c["extra"], c["exact"]) == (
        1, 1, 1, 1, False, True)


def test_a_repeated_object_counts_as_extra():
    img = _image(SceneObject("circle", "red", "small", 0.05, 0.05), SceneObject("circle", "red", "small", 0.6, 0.6),
                 SceneObject("square", "blue", "small", 0.05, 0.6))
    c = count_named(img, {("red", "circle"): 1}, native=32)
    assert (c["named"], c["total"], c["extra"], c["exact"]) == (2, 3, True, False)
    assert c["per_object"] == {"red circle": 2}


def test_specks_below_the_copy_area_do_not_count():
    # a 4x upscaled image (128 px) of a 32 px-native world: a 4x4 px speck is 16 px, below 2.5% of 32**2
    img = _image(SceneObject("square", "red", "large", 0.3, 0.3), size=128)
    arr = img.copy()
    arr.paste((220, 40, 40), (2, 2, 6, 6))
    c = count_named(arr, {("red", "square"): 1}, native=32)
    assert (c["named"], c["extra"]) == (1, False)
    arr.paste((220, 40, 40), (100, 100, 108, 108))  # 64 px: a copy
    c = count_named(arr, {("red", "square"): 1}, native=32)
    assert (c["named"], c["extra"]) == (2, True)


def test_summary_means_and_shares():
    rows = [
        {"factor": 3, "method": "accdiffusion", "named": 1, "shape_matched": 1, "expected": 1, "total": 1,
         "extra": False, "exact": True, "seconds": 2.0},
        {"factor": 3, "method": "accdiffusion", "named": 3, "shape_matched": 0, "expected": 1, "total": 4,
         "extra": True, "exact": False, "seconds": 4.0},
        {"factor": 3, "method": "direct", "named": 0, "shape_matched": 0, "expected": 1, "total": 0,
         "extra": False, "exact": False, "seconds": 1.0},
    ]
    s = summarize(rows)
    assert [x["method"] for x in s] == ["direct", "accdiffusion"]
    acc = s[1]
    assert (acc["named_per_image"], acc["total_per_image"], acc["extra_share"], acc["exact_share"],
            acc["seconds_per_image"]) == (2.0, 2.5, 0.5, 0.5, 3.0)
    table = markdown(s, "cmd")
    assert "| 3x | accdiffusion | 2 | 2.00 (1.00) | 0.50 | 2.50 | 50% | 50% | - | 3.0 |" in table


def test_summary_quality_columns():
    """Speckle and grey tiles are means over the images; rows measured before they existed show '-'."""
    row = {"factor": 4, "method": "direct", "named": 1, "shape_matched": 1, "expected": 1, "total": 1,
           "extra": False, "exact": True, "seconds": 1.0, "unet_evaluations": 30}
    rows = [dict(row, speckle=0.01, grey_tiles=2), dict(row, speckle=0.03, grey_tiles=1)]
    (s,) = summarize(rows)
    assert (round(s["speckle"], 6), s["grey_tiles_per_image"]) == (0.02, 1.5)
    assert "| 4x | direct | 2 | 1.00 (1.00) | 1.00 | 1.00 | 0% | 100% | - | 1.0 | 30 | 2.00% | 1.50 |" in markdown([s], "c")
    (old,) = summarize([row])
    assert old["speckle"] is None
    assert markdown([old], "c").splitlines()[-1].endswith("| 30 | - | - |")


def _row(factor, method, prompt, seed, exact, **more):
    return {"factor": factor, "method": method, "prompt": prompt, "prompt_index": 0, "seed": seed, "named": 1,
            "shape_matched": 1, "expected": 1, "total": 1, "extra": not exact, "exact": exact, "seconds": 1.0,
            "unet_evaluations": 30, **more}


def test_exact_when_phase_1_is_exact():
    """Each method is also measured on the images whose phase-1 image (same prompt and seed) was exact:
    prompt p seed 0 and prompt q seed 0 had an exact phase 1, prompt p seed 1 did not."""
    rows = [_row(1, PHASE1, "p", 0, True), _row(1, PHASE1, "p", 1, False), _row(1, PHASE1, "q", 0, True),
            _row(4, "accdiffusion", "p", 0, True), _row(4, "accdiffusion", "p", 1, True),
            _row(4, "accdiffusion", "q", 0, False),
            _row(4, "direct", "p", 0, True)]
    phase1, direct, acc = summarize(rows)
    assert (phase1["method"], phase1["exact_share"], phase1["exact_given_phase1"]) == (PHASE1, 2 / 3, None)
    assert (acc["exact_share"], acc["exact_given_phase1"], acc["phase1_exact_images"]) == (2 / 3, 0.5, 2)
    # direct sampling does not start from phase 1
    assert direct["exact_given_phase1"] is None
    table = markdown(summarize(rows), "c")
    assert "| 4x | accdiffusion | 3 | 1.00 (1.00) | 1.00 | 1.00 | 33% | 67% | 50% (2) | 1.0 | 30 |" in table
    assert table.index("| 1x | phase-1 |") < table.index("| 4x | direct |") < table.index("| 4x | accdiffusion |")


def test_a_rerun_part_replaces_the_earlier_rows_of_the_same_images(tmp_path):
    """Parts of parallel or repeated runs are merged with one row per (factor, method, prompt, seed), the
    newest part winning; the grids are drawn from the merged rows."""
    parts = tmp_path / "parts"
    parts.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (32, 32), "white").save(tmp_path / name)
    old = [_row(4, "accdiffusion", "p", 0, False, image="a.png"), _row(4, "accdiffusion", "p", 1, True, image="a.png")]
    new = [_row(4, "accdiffusion", "p", 0, True, image="b.png")]
    (parts / "4x-accdiffusion-seeds-0-1.json").write_text(json.dumps(old))
    (parts / "4x-accdiffusion-seeds-0.json").write_text(json.dumps(new))
    os.utime(parts / "4x-accdiffusion-seeds-0-1.json", (1_000_000, 1_000_000))
    summarize_folder(tmp_path, "cmd")
    merged = json.loads((tmp_path / "repetition.json").read_text())
    assert [(r["seed"], r["exact"], r["image"]) for r in merged["images"]] == [(0, True, "b.png"), (1, True, "a.png")]
    assert merged["summary"][0]["images"] == 2 and merged["summary"][0]["exact_share"] == 1.0
    assert (tmp_path / "repetition-4x.png").is_file()
