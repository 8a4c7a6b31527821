"""The piecewise-affine warp behind the generator input (facegen.piecewise_map), on the shipped
identity bank's mesh."""
import cv2
import numpy as np
import pytest
from anoncam import assets
from anoncam.anonymize import facegen as fg
from anoncam.anonymize.generative import IdentityBank


@pytest.fixture(scope="module")
def geo(models):
    return IdentityBank(assets.model_path("generator_identities")).geo


def _affine(angle: float, scale: float, shift) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]], np.float32)


def test_global_affine_is_inverted_exactly(geo):
    """When dst is one affine of src, every triangle carries the same affine, so the map is its
    inverse at every pixel the mesh covers."""
    m = _affine(0.2, 0.8, (20.0, 10.0))
    src = geo.mean_ring
    dst = fg.apply_affine(m, src)
    mx, my = fg.piecewise_map(src, dst, geo.tris)
    covered = mx > -999
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    ys, xs = np.mgrid[0:fg.SIZE, 0:fg.SIZE].astype(np.float64)
    ex = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    ey = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    # the face oval, moved by m, lies inside the covered pixels
    oval = fg.poly_mask(fg.apply_affine(m, fg.oval_polygon(geo.mean, 1.0))) > 0.5
    assert covered[oval].all()
    err = np.hypot(mx - ex, my - ey)[covered]
    assert err.max() < 0.05, err.max()  # float32 rounding only


def test_local_move_stays_local(geo):
    """Moving one mesh vertex changes the map only in the triangles around it, and there it takes
    the pixel at the vertex's new place back to its old place."""
    src = geo.mean_ring
    dst = src.copy()
    v = 10  # forehead centre (large triangles: the move folds none)
    dst[v] += np.float32([3.0, -2.0])
    mx, my = fg.piecewise_map(src, dst, geo.tris)
    ys, xs = np.mgrid[0:fg.SIZE, 0:fg.SIZE].astype(np.float32)
    moved = np.hypot(mx - xs, my - ys) > 0.05
    moved &= mx > -999
    near = np.hypot(xs - dst[v, 0], ys - dst[v, 1]) < 15
    assert moved.any() and not (moved & ~near).any()
    x, y = np.round(dst[v]).astype(int)
    assert np.hypot(mx[y, x] - src[v, 0], my[y, x] - src[v, 1]) < 1.0


def test_face_triangles_cover_the_valid_identity_region(geo):
    """from_canonical maps only the triangles with a mesh vertex: the identity's valid region must
    lie inside them, or a face would lose texture."""
    mx, _ = fg.piecewise_map(geo.mean_ring, geo.mean_ring, geo.tris, use=geo.face_tris)
    assert (mx[geo.id_valid > 0] > -999).all()


def test_fill_smooth_keeps_known_pixels_and_bridges_holes():
    """A ring-shaped hole in a horizontal ramp is filled with values between its borders, close to
    the ramp, and the known pixels come back unchanged."""
    ramp = np.repeat(np.linspace(0.0, 1.0, 128, dtype=np.float32)[None, :, None], 128, 0).repeat(3, 2)
    known = np.ones((128, 128), np.float32)
    yy, xx = np.mgrid[0:128, 0:128]
    r = np.hypot(xx - 64, yy - 64)
    hole = (r > 30) & (r < 45)
    known[hole] = 0
    out = fg.fill_smooth(ramp * known[..., None], known)
    assert np.abs(out - ramp)[~hole].max() < 1e-4
    assert np.abs(out - ramp)[hole].mean() < 0.05
    assert out[hole].min() >= 0.0 and out[hole].max() <= 1.0


def test_grey_face_gets_a_grey_identity(models, media):
    """A grey frame (night IR, ORL) must not come back with a coloured face."""
    import cv2
    from anoncam.pipeline import Pipeline
    from conftest import make_config
    from helpers import core, iter_frames

    frame = next(iter_frames(media["franck"]))
    grey = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    pipe = Pipeline.from_config(make_config(anonymize={"method": "generative"}))
    out = grey.copy()
    res = pipe.process(out, 0, still=True)
    assert res.status == "ok" and len(res.faces) == 1
    ys, xs = core(res.faces[0].box, out.shape, 0.6)
    face = out[ys, xs].astype(int)
    assert np.abs(face - grey[ys, xs]).mean() > 5  # replaced ...
    assert (face.max(2) - face.min(2)).mean() < 3  # ... and grey


def test_inverse_map_matches_the_full_one(geo, models, media):
    """from_canonical's Newton inverse: within half a pixel of piecewise_map over the identity's
    valid region on a real face (shape-pulled as at run time), leaving at most a few % of it
    uncovered (folds)."""
    import cv2
    from anoncam.eval.metrics import Instruments

    img = cv2.imread(str(media["astronaut"]))
    inst = Instruments()
    lm = inst.landmarks(img, inst.main_face(img))
    bank = IdentityBank(assets.model_path("generator_identities"))
    _, pts, _ = geo.crop(img, lm)
    for shape in bank.shapes[:4]:
        dst = fg.with_ring(pts + (shape - geo.mean))
        full = fg.piecewise_map(geo.mean_ring, dst, geo.tris, use=geo.face_tris)
        inv = fg.inverse_map(*geo._located, geo.mean_ring, dst, geo.tris)
        region = full[0] > -999
        region &= cv2.remap(geo.id_valid, full[0], full[1], cv2.INTER_LINEAR) > 0.5
        assert region.sum() > 3000
        ok = inv[0][region] > -999
        assert ok.mean() > 0.95
        err = np.hypot(full[0] - inv[0], full[1] - inv[1])[region][ok]
        assert np.percentile(err, 99) < 0.5 and np.median(err) < 0.1, (np.percentile(err, 99), np.median(err))


def test_no_outline_at_the_identity_edge(models, media):
    """Where the synthetic identity meets the fill around it, the render draws no dark rim: along
    the identity's edge the brightness stays within the range of just inside and just outside it
    (a premultiplied edge or the source face's own hairline drew one)."""
    import cv2
    from anoncam.eval.metrics import Instruments

    bank = IdentityBank(assets.model_path("generator_identities"))
    geo, inst = bank.geo, Instruments()
    k3 = np.ones((3, 3), np.uint8)
    dips = []
    for name in ("astronaut", "group2"):
        img = cv2.imread(str(media[name]))
        lm = inst.landmarks(img, inst.main_face(img))
        crop, pts, _ = geo.crop(img, lm)
        for idx in range(0, len(bank.textures), 40):
            x, cover = fg.generator_input(geo, crop, pts, bank.textures[idx], 1.4, bank.shapes[idx],
                                          fg.SHAPE_PULL, bank.valid(idx))
            lum = cv2.cvtColor((fg.classic_render(x) * 255).astype(np.float32), cv2.COLOR_BGR2GRAY)
            v = (x[0, 3] > 0.5).astype(np.uint8)
            edge = (cv2.dilate(v, k3) - cv2.erode(v, k3)) > 0
            inside = (cv2.erode(v, k3, iterations=2) - cv2.erode(v, k3, iterations=4)) > 0
            outside = ((cv2.dilate(v, k3, iterations=4) - cv2.dilate(v, k3, iterations=2)) > 0) & (cover > 0.99)
            ref = min(lum[inside].mean(), lum[outside].mean())
            dips.append(ref - lum[edge].mean())
    assert max(dips) < 2.0, np.round(dips, 1)


def radius_image(size: int = 200, r0: float = 60.0):
    """An image whose value is the distance to its centre, a 72-gon circle of radius r0 about it."""
    c = np.float32([size / 2, size / 2])
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    poly = (c + r0 * np.stack([np.cos(t), np.sin(t)], 1)).astype(np.float32)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.hypot(xs - c[0], ys - c[1]), poly, r0


def test_mirror_ring_reflects_across_the_edge():
    """Known answer: around a circle of radius R, an image whose value is the radius gives, at
    radius r inside the circle, 2R - r + margin (the pixel reflected across the edge)."""
    rad, poly, r0 = radius_image()
    out = fg.mirror_ring(rad, poly, margin=1.0)
    ring = (rad > 35) & (rad < 58)
    assert np.abs(out[ring] - (2 * r0 - rad[ring] + 1.0)).max() < 0.6  # the polygon's chords only
    assert (out[(rad > 23) & (rad < 58)] >= r0).all()  # never reads inside the polygon


def test_ring_reads_nothing_under_the_cover(models, media):
    """The ring's texture comes from the surroundings only: with the covered region painted a
    colour found nowhere else, no pixel of the ring fill carries it."""
    import cv2
    from anoncam.anonymize.generative import Generative
    from anoncam.eval.metrics import Instruments

    img = cv2.imread(str(media["astronaut"]))
    inst = Instruments()
    lm = inst.landmarks(img, inst.main_face(img))
    bank = IdentityBank(assets.model_path("generator_identities"))
    poly = fg.oval_polygon(lm, 1.4)
    marked = img.copy()
    cv2.fillPoly(marked, [np.round(poly).astype(np.int32)], (255, 0, 255))
    m = bank.geo.align(lm) * np.float32(2)
    src, known = Generative.surroundings(marked, poly, m, 256)
    cpoly = fg.apply_affine(m, poly)
    low = fg.lowpass_over(src, known, 20.0)  # the surroundings' own colours
    ring = fg.ring_fill(src, known, cpoly, low, 2.0)
    cover = fg.poly_mask(cpoly, 256) > 0.5
    def magenta(x):
        return (x[..., 0] > 0.6) & (x[..., 1] < 0.3) & (x[..., 2] > 0.6)
    seen = src / np.maximum(known, 1e-3)[..., None]
    assert not magenta(seen[known > 0.05]).any() and not magenta(ring).any()
    # nor with the ring's own colours (grey here): only the reflection's colours and grain are added
    own = fg.ring_fill(src, known, cpoly, np.full_like(src, 0.5), 2.0)
    assert not magenta(own).any()
    inner = cv2.erode(cover.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert known[inner].max() == 0
    assert (ring[cover].std(0) > 0.05).all()  # and it is texture, not one flat colour


def test_ring_takes_its_own_colours_where_the_reflection_departs():
    """The ring's colours are its own (low-passed): a bright backdrop reflected over dark hair (top)
    gives way to them with only fine texture left (but for a crossover at the covered edge); where the
    reflection is of the ring's own colours (sides) it stays as it is, texture and all; below the
    chin, the ring's own colours."""
    n = 256
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    poly = np.stack([128 + 60 * np.cos(t), 128 + 60 * np.sin(t)], 1).astype(np.float32)
    cover = fg.poly_mask(poly, n) > 0.5
    rng = np.random.default_rng(0)
    img = np.full((n, n, 3), 0.25, np.float32) + rng.normal(0, 0.05, (n, n, 1)).astype(np.float32)
    img[:60] = 0.9  # a bright backdrop above the covered edge
    known = (~cover).astype(np.float32)
    src = img * known[..., None]
    low = np.full((n, n, 3), 0.2, np.float32)  # the ring's own colours: dark hair all round
    out = fg.ring_fill(src, known, poly, low, 1.0)
    top = cover[:, :] & (np.arange(n)[:, None] < 80) & (np.abs(np.arange(n) - 128) < 20)[None, :]
    side = cover & (np.abs(np.arange(n) - 128) < 10)[:, None] & (np.arange(n) > 180)[None, :]
    rows = np.arange(n)[:, None]
    chin = cover & (rows > 172) & (rows < 188 - 3 * fg.RING_EDGE) & (np.abs(np.arange(n) - 128) < 10)[None, :]
    deep = top & (np.arange(n)[:, None] >= 68 + 3 * fg.RING_EDGE)  # past the edge's crossover
    assert abs(out[top].mean() - 0.2) < 0.1            # not the bright backdrop (0.9)
    assert np.abs(out[deep] - 0.2).max() <= fg.RING_GRAIN_MAX + 0.02
    assert abs(out[side].mean() - 0.25) < 0.03 and out[side].std() > 0.025  # the reflection, textured
    assert abs(out[chin].mean() - 0.2) < 0.02 and out[chin].std() < 0.01   # below the chin: own colours


def test_lowpass_keeps_colour_and_drops_detail():
    """The ring reads the covered region only through this low-pass: a fine pattern leaves its mean
    colour and nothing of its shape."""
    img = np.zeros((256, 256, 3), np.float32)
    img[::2, ::2] = img[1::2, 1::2] = 1.0  # 1 px checkerboard
    img[100:110, 100:110] = 0.0            # a 10 px dark square (a feature smaller than the low-pass)
    out = fg.lowpass(img, fg.RING_LOW * 2)
    assert abs(out[20:60, 20:60].mean() - 0.5) < 0.01 and out[20:60, 20:60].std() < 0.01
    assert out[105, 105].mean() > 0.35  # the square is gone, not drawn (0 there, 0.5 around)


def test_blend_bands_ends():
    rng = np.random.default_rng(0)
    a, b = rng.random((64, 64, 3), np.float32), rng.random((64, 64, 3), np.float32)
    assert np.allclose(fg.blend_bands(a, b, np.ones((64, 64), np.float32)), a, atol=1e-5)
    assert np.allclose(fg.blend_bands(a, b, np.zeros((64, 64), np.float32)), b, atol=1e-5)


def test_mouth_drawn_only_when_open():
    img = np.full((128, 128, 3), 0.6, np.float32)
    t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    shut = np.stack([64 + 12 * np.cos(t), 80 + 0.05 * np.sin(t)], 1).astype(np.float32)
    assert np.array_equal(fg.draw_mouth(img, shut, 1.0), img)
    wide = np.stack([64 + 12 * np.cos(t), 80 + 6 * np.sin(t)], 1).astype(np.float32)
    out = fg.draw_mouth(img, wide, 1.0)
    assert out[80, 64].mean() < 0.3 and out[77, 64].mean() > out[80, 64].mean() + 0.25  # cavity, teeth above
    assert np.array_equal(out[20:60], img[20:60])  # nothing far from the mouth changes


def test_teeth_follow_the_curve_of_a_smile():
    """The teeth's edge runs along the upper lip: where a smile lifts the corners, the teeth rise too
    (no flat slot across the mouth)."""
    img = np.full((128, 128, 3), 0.6, np.float32)
    x = np.linspace(44, 84, 11, dtype=np.float32)
    u = (x - 64) / 20
    upper = np.stack([x, 74 - 8 * (1 - (1 - u ** 2))], 1)  # corners 8 px above the middle
    lower = np.stack([x[::-1], (84 - 8 * u ** 2)[::-1]], 1)
    out = fg.draw_mouth(img, np.concatenate([upper, lower[1:-1]]).astype(np.float32), 1.0)

    def first_dark(col):  # the first cavity row below the teeth in a column
        return next(y for y in range(60, 100) if out[y, col].mean() < 0.35)
    assert out[76, 64].mean() > 0.5 and out[73, 52].mean() > 0.5  # teeth under the lip, middle and side
    assert first_dark(64) - first_dark(52) >= 2  # their edge is higher off-centre


def test_teeth_fill_a_mouth_opened_a_little():
    """FaceMesh's inner lips sit on the teeth of a smile, so a mouth opened a fifth of its width is
    mostly teeth (lit brighter than the skin), with the cavity a thin band under them, not a dark
    slot with a row of small teeth."""
    img = np.full((128, 128, 3), 0.6, np.float32)
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    lips = np.stack([64 + 20 * np.cos(t), 80 + 4 * np.sin(t)], 1).astype(np.float32)  # 40 px wide, 8 open
    col = fg.draw_mouth(img, lips, 1.0)[76:85, 64].mean(1)
    assert (col > 0.6).sum() >= 5  # teeth over most of the opening's 8 rows ...
    assert col.max() > 0.75 and col[-3:].min() < 0.45  # ... brighter than the skin; the cavity below


def test_lips_drawn_on_the_mesh_contours_and_grey_stays_grey(geo):
    """draw_lips tints only the lips (and the line between them) of the mesh it is given: a smile's
    lifted corners show where the mesh puts them; a grey face gets grey lips."""
    img = np.full((128, 128, 3), 0.6, np.float32)
    pts = geo.mean.copy()
    out = fg.draw_lips(img, pts, 1.0, keep=1.0)
    lips = fg.poly_mask(np.concatenate([pts[fg.UPPER_OUTER], pts[fg.LOWER_OUTER[::-1]]]))
    inside = lips > 0.99
    assert inside.sum() > 20
    assert (out[inside][:, 2] > out[inside][:, 0] + 0.05).mean() > 0.8  # redder than the skin there
    lo, hi = pts[fg.OUTER_LIPS].min(0), pts[fg.OUTER_LIPS].max(0)
    far = np.ones((128, 128), bool)
    far[int(lo[1]) - 8:int(hi[1]) + 9, int(lo[0]) - 8:int(hi[0]) + 9] = False
    assert np.array_equal(out[far], img[far])
    grey = fg.draw_lips(img, pts, 1.0, keep=0.0)
    assert np.abs(grey - grey.mean(2, keepdims=True)).max() < 1e-5
    # corners lifted in the mesh (a smile): the darkest point of the corner's column moves up with them
    smile = pts.copy()
    for c in (61, 291):
        smile[c, 1] -= 4
    col = int(round(pts[61, 0] - 1))
    a = fg.draw_lips(img, pts, 1.0).mean(2)[:, col].argmin()
    b = fg.draw_lips(img, smile, 1.0).mean(2)[:, col].argmin()
    assert a - b >= 2


def test_identity_shape_leaves_the_mouths_opening_width_and_corners(geo, models):
    """The identity's own shape moves the mesh, but not the mouth's expression: the inner-lip gaps,
    the mouth's width and its corners' height keep the face's own."""
    bank = IdentityBank(assets.model_path("generator_identities"))
    pts = geo.mean.copy()
    pts[fg.LOWER_INNER[1:-1], 1] += 5  # an open mouth
    pts[[61, 291], 1] -= 3             # corners lifted: a smile
    crop = np.full((fg.SIZE, fg.SIZE, 3), 128, np.uint8)
    moved = []
    for i in range(0, len(bank.shapes), 4):
        p = fg.prepare(geo, crop, pts, bank.textures[i], 1.4, bank.shapes[i], fg.SHAPE_PULL, bank.valid(i))
        gap = p.pts[fg.LOWER_INNER, 1] - p.pts[fg.UPPER_INNER, 1]
        assert np.allclose(gap, pts[fg.LOWER_INNER, 1] - pts[fg.UPPER_INNER, 1], atol=1e-4)
        assert np.allclose(p.pts[291] - p.pts[61], pts[291] - pts[61], atol=1e-4)
        lift = p.pts[[61, 291], 1].mean() - p.pts[[13, 14], 1].mean()
        assert abs(lift - (pts[[61, 291], 1].mean() - pts[[13, 14], 1].mean())) < 1e-4
        moved.append(np.abs(p.pts - pts).max())
    assert np.median(moved) > 1.0  # while the rest of the face does take the identity's shape


def test_skin_mask_leaves_out_eyes_brows_and_lips(geo):
    """Known answer on the bank's mean shape: cheeks and forehead are skin; the eye centres, a brow
    and the lips' middle are not; nothing outside the face oval is."""
    m = fg.skin_mask(geo.mean)
    at = lambda i: m[int(round(geo.mean[i, 1])), int(round(geo.mean[i, 0]))]
    assert at(50) == 1 and at(280) == 1 and at(151) == 1   # cheeks, forehead
    assert at(468 - 1) in (0, 1)  # (an iris point of a 478-point mesh would be past 468: not used)
    for i in (159, 386, 105, 13, 14, 0, 17):  # eyelids, a brow, lips
        assert at(i) == 0, i
    assert m[fg.poly_mask(fg.oval_polygon(geo.mean, 1.0)) == 0].max() == 0


def test_fill_identity_keeps_its_skin_and_fills_its_holes_from_it():
    """A two-tone texture with a hole in each half: the known pixels come back unchanged, and each
    hole is filled with its own half's colour (not a flat colour from elsewhere), at the texture's
    own scale (valid given at 128 px, texture at 256)."""
    tex = np.zeros((256, 256, 3), np.uint8)
    tex[:, :128] = (60, 90, 150)
    tex[:, 128:] = (90, 120, 180)
    valid = np.ones((128, 128), np.float32)
    valid[50:70, 20:40] = 0
    valid[50:70, 90:110] = 0
    out = fg.fill_identity(tex, valid)
    known = np.ones((256, 256), bool)
    known[96:144, 36:84] = known[96:144, 176:224] = False
    assert np.array_equal(out[known], tex[known])
    assert np.abs(out[110:130, 50:70].astype(int) - (60, 90, 150)).max() <= 2
    assert np.abs(out[110:130, 190:210].astype(int) - (90, 120, 180)).max() <= 2


@pytest.mark.parametrize("dim", [1.0, 0.45])
def test_identity_skin_takes_the_face_skin_colour(models, media, dim):
    """The recoloured identity's skin (prepare, over its skin mask) has the original skin's mean
    colour within 4 Lab units, for a fair and for a darkened (dark-skinned) copy of a face: dark
    skin stays dark."""
    import cv2
    from anoncam.eval.metrics import Instruments

    img = cv2.imread(str(media["astronaut"]))
    img = np.clip(img.astype(np.float32) * dim, 0, 255).astype(np.uint8)
    inst = Instruments()
    lm = inst.landmarks(img, inst.main_face(img))
    bank = IdentityBank(assets.model_path("generator_identities"))
    crop, pts, _ = bank.geo.crop(img, lm)
    face = fg.skin_mask(pts) > 0.5
    lum = crop.astype(np.float32).mean(2)
    face &= lum >= fg.DARK_EDGE * np.median(lum[face])
    lab = lambda px: cv2.cvtColor(px.reshape(-1, 1, 3).astype(np.float32) / 255, cv2.COLOR_BGR2Lab).reshape(-1, 3)
    want = lab(crop[face]).mean(0)
    for idx in range(0, len(bank.textures), 20):
        p = fg.prepare(bank.geo, crop, pts, bank.filled(idx), 1.4, bank.shapes[idx], fg.SHAPE_PULL,
                       bank.geo.id_valid)
        tex = p.x[0, :3].transpose(1, 2, 0)
        skin = (fg.skin_mask(p.pts) > 0.5) & (p.x[0, 3] > 0.99)
        got = lab(tex[skin] * 255).mean(0)
        assert np.linalg.norm(got - want) < 4.0, (idx, got, want)


def test_mirror_ring_squeezed_reads_only_near_the_edge():
    """Known answer with squeeze 0.5: at radius r inside a circle of radius R, the pixel at
    R + 0.5 (R - r) + margin; so a ring of depth d reads no further than d / 2 past the edge."""
    rad, poly, r0 = radius_image()
    out = fg.mirror_ring(rad, poly, margin=1.0, squeeze=0.5)
    ring = (rad > 35) & (rad < 58)
    assert np.abs(out[ring] - (r0 + 0.5 * (r0 - rad[ring]) + 1.0)).max() < 0.6
    assert out[ring].max() < r0 + 0.5 * 25 + 1.6


def _eye_boxes(pts: np.ndarray, pad: int) -> np.ndarray:
    """True inside each eye's bounding box grown by pad px."""
    near = np.zeros((256, 256), bool)
    for upper, lower in fg.EYE_LIDS:
        lo, hi = pts[np.concatenate([upper, lower])].min(0), pts[np.concatenate([upper, lower])].max(0)
        near[int(lo[1]) - pad:int(hi[1]) + pad + 1, int(lo[0]) - pad:int(hi[0]) + pad + 1] = True
    return near


def test_eyes_drawn_in_the_openings_alike(geo):
    """draw_eyes puts a dark iris and pupil and a lighter sclera inside each opening of the mesh it is
    given, the two irises placed alike (mirrored about the face's middle), and changes nothing away
    from the eyes; a grey face gets grey eyes."""
    img = np.full((256, 256, 3), 0.6, np.float32)
    pts = geo.mean * np.float32(2.0)
    out = fg.draw_eyes(img, pts, 2.0)
    assert np.array_equal(out[~_eye_boxes(pts, 8)], img[~_eye_boxes(pts, 8)])
    centres = []
    for upper, lower in fg.EYE_LIDS:
        inside = fg.poly_mask(np.concatenate([pts[upper], pts[lower[::-1]]]), 256) > 0.99
        lum = out.mean(2)
        assert inside.sum() > 40
        assert lum[inside].min() < 0.1            # the pupil
        assert (lum[inside] > 0.5).mean() > 0.2   # sclera on either side
        dark = inside & (lum < 0.25)
        ys, xs = np.nonzero(dark)
        centres.append(np.float32([xs.mean(), ys.mean()]))
    mid = (pts[33, 0] + pts[263, 0]) / 2  # the outer corners' middle
    assert abs((centres[0][0] - mid) + (centres[1][0] - mid)) < 1.5  # mirrored across the face
    assert abs(centres[0][1] - centres[1][1]) < 1.5
    grey = fg.draw_eyes(img, pts, 2.0, keep=0.0)
    assert np.abs(grey - grey.mean(2, keepdims=True)).max() < 1e-5


def test_closed_eyes_get_only_the_lid_line(geo):
    """Lids that meet (a blink) get a darker line along them and no iris or sclera."""
    img = np.full((256, 256, 3), 0.6, np.float32)
    pts = geo.mean * np.float32(2.0)
    for upper, lower in fg.EYE_LIDS:
        pts[lower[1:-1]] = pts[upper[1:-1]]  # the lower lid up against the upper one
    out = fg.draw_eyes(img, pts, 2.0)
    near = _eye_boxes(pts, 8)
    lum = out.mean(2)
    assert lum[near].min() < 0.45          # the line
    assert lum[near].min() > 0.15          # no pupil
    assert (lum[near] > 0.6 + 1e-4).sum() == 0  # no sclera brighter than the skin
    assert np.array_equal(out[~near], img[~near])


def test_bank_depth_is_a_face(geo):
    """The canonical depth (models/generator/build_geometry.py) is a face: the nose tip nearest the
    camera, the eye corners behind it, the sides of the face furthest; its normals face left on the
    left of the face, right on the right, and the camera in the middle."""
    z = geo.depth
    assert z[1] < min(z[33], z[263]) - 5 and max(z[33], z[263]) < min(z[234], z[454]) - 5
    n = geo.normals
    (lx, ly), (rx, ry) = np.round(geo.mean[[234, 454]] * [[0.9], [0.9]] + geo.mean.mean(0) * 0.1).astype(int)
    cx, cy = np.round(geo.mean[[6]].mean(0)).astype(int)  # between the eyes
    assert n[ly, lx, 0] < -0.3 and n[ry, rx, 0] > 0.3
    assert n[cy, cx, 2] < -0.9


def test_head_rotation_recovers_a_turn(geo):
    for yaw in (-30.0, 0.0, 25.0):
        a = np.radians(yaw)
        r = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        p3 = np.c_[geo.mean, geo.depth] - np.r_[geo.mean.mean(0), 0]
        pts = (p3 @ r.T)[:, :2] * 1.1 + 64
        got = fg.head_rotation(pts.astype(np.float32), geo.mean, geo.depth)
        assert abs(np.degrees(np.arctan2(got[0, 2], got[0, 0])) - yaw) < 2.0, yaw


def test_relighting_takes_the_originals_light_not_its_detail(geo):
    """A flat-lit face relights a flat identity by ~1 everywhere; a face lit from one side by a
    known light relights it by that light's shading (normalized over the skin), whatever the
    original's own detail; a side light darkens the far side."""
    maps = geo.maps(geo.mean)
    skin = fg.skin_mask(geo.mean)
    flat_id = np.full((128, 128, 3), 150, np.uint8)
    flat = fg.face_shading(geo, flat_id, geo.mean, maps, skin, flat_id)
    sel = (skin > 0.5) & (maps[0] > -999)
    assert np.abs(flat[sel] - 1).max() < 0.02
    light = np.float32([1.0, 0.5, -0.2, -0.8])  # from the image's right (the subject's left), above, front
    true = fg.shading(light, geo.normals)
    rng = np.random.default_rng(0)
    detail = rng.uniform(0.85, 1.15, (128, 128, 1))  # the original's own texture: must not come through
    lit = np.clip(120 * true[..., None] * detail, 0, 255).astype(np.uint8).repeat(3, 2)
    got = fg.face_shading(geo, lit, geo.mean, maps, skin, flat_id)
    want = np.clip(true / true[sel].mean(), *fg.SHADE_RANGE)
    assert np.abs(got[sel] - want[sel]).max() < 0.06
    assert np.std(got[sel] - want[sel]) < 0.02
    left, right = sel.copy(), sel.copy()
    left[:, 64:], right[:, :64] = False, False
    assert got[left].mean() < got[right].mean() - 0.1


def _posed(geo, yaw: float, scale: float, shift) -> np.ndarray:
    a = np.radians(yaw)
    r = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    p3 = np.c_[geo.mean, geo.depth] - np.r_[geo.mean.mean(0), 0]
    return ((p3 @ r.T)[:, :2] * scale + shift).astype(np.float32)


def test_expression_kept_own_face_shape_dropped(geo):
    """expression_only keeps how a face moves (a mode of the bank's expression basis) and drops an
    offset outside the basis (a face's own proportions), under a turned head."""
    b = geo.expression
    assert np.allclose(b @ b.T, np.eye(len(b)), atol=1e-4)
    rng = np.random.default_rng(1)
    for yaw in (-20.0, 0.0, 15.0):
        base = _posed(geo, yaw, 1.1, (66, 63))
        assert np.sqrt(((fg.expression_only(geo, base) - base) ** 2).mean()) < 0.3
        move = (b[0] + 0.5 * b[2]).reshape(-1, 2) * 40.0  # a few px at the moving points
        got = fg.expression_only(geo, base + move)
        rms = lambda d: float(np.sqrt((d ** 2).mean()))
        assert rms(got - (base + move)) < 0.25 * rms(move)
        own = rng.standard_normal(b.shape[1])
        own -= b.T @ (b @ own)
        own = own.reshape(-1, 2) * (2.0 / np.sqrt((own ** 2).mean()))  # 2 px rms of face shape
        got = fg.expression_only(geo, base + own)
        assert rms(got - base) < 0.25 * rms(own)


def test_flawed_identities_are_never_candidates(models):
    """The bank marks identities whose texture carries scars or glasses rims (curate.py); at every
    age and gender the choice's candidates leave them out and still number 12."""
    bank = IdentityBank(assets.model_path("generator_identities"))
    assert len(bank.flawed) >= 1
    seen = set()
    for male in (0.05, 0.95):
        for age in range(2, 90, 4):
            ids = set(int(i) for i in bank.candidates(float(age), male))
            assert len(ids) == 12 and not ids & bank.flawed, (age, male, ids & bank.flawed)
            seen |= ids
    assert len(seen) > 24  # the rest of the bank stays in use


def test_periphery_gain_takes_the_edge_to_the_originals(geo):
    """The rendering's skin near its oval's edge, over its middle, is taken to the original's, side by
    side (a face lit from its left is darker at its right edge), keeping the skin's mean; a flat
    original over a flat rendering changes nothing."""
    pts = geo.mean
    skin = fg.skin_mask(pts)
    r, th = fg.oval_radius(pts)
    flat = np.full((128, 128, 3), 0.6, np.float32)
    same = fg.periphery_gain((flat * 255).astype(np.uint8), pts, skin, flat, pts)
    assert np.abs(same - 1).max() < 1e-3
    # the original darker toward its edge, more so on the image's right (x > centre)
    fall = 1 - 0.35 * np.clip((r - 0.5) / 0.5, 0, 1) * (0.5 + 0.5 * (np.cos(th) > 0))
    orig = (flat * fall[..., None] * 255).astype(np.uint8)
    gain = fg.periphery_gain(orig, pts, skin, flat, pts)
    out = flat[..., 0] * gain
    s = skin > 0.5

    def ratio(img, right):
        band = s & (r > 0.75) & ((np.cos(th) > 0.7) if right else (np.cos(th) < -0.7))
        return img[band].mean() / img[s & (r < 0.6)].mean()
    want = [ratio(orig[..., 0] / 255.0, side) for side in (False, True)]
    got = [ratio(out, side) for side in (False, True)]
    assert want[1] < want[0] - 0.08  # the test image is what it says
    assert abs(got[0] - want[0]) < 0.04 and abs(got[1] - want[1]) < 0.04
    assert abs(out[s].mean() - 0.6) < 0.01  # the skin's mean kept


def _eye_gap(pts, k):
    up, lo = fg.EYE_LIDS[k]
    o, ax, n, w = fg._eye_frame(pts[up], pts[lo])
    return float(((pts[up][4] - o) @ n) - ((pts[lo][4] - o) @ n)) / w


def test_open_eyes_shuts_only_shut_eyes(geo):
    """An eye the original has open (EYE_SHUT[1] or more) stays as the mesh draws it; one under
    EYE_SHUT[0] has its upper lid on its lower lid; between, partly lowered; corners and lower lids
    never move."""
    pts = geo.mean.copy()
    same = fg.open_eyes(pts, (fg.EYE_SHUT[1], 0.5))
    assert np.array_equal(same, pts)
    shut = fg.open_eyes(pts, (sum(fg.EYE_SHUT) / 2, fg.EYE_SHUT[0] / 2))
    assert abs(_eye_gap(shut, 0) - _eye_gap(pts, 0) / 2) < 0.01
    assert abs(_eye_gap(shut, 1)) < 0.01
    moved = np.flatnonzero(np.abs(shut - pts).max(1) > 1e-6)
    lids = np.concatenate([up[1:-1] for up, _ in fg.EYE_LIDS])
    assert set(moved) <= set(lids)


def test_a_lowered_lid_covers_the_identitys_eye(geo):
    """Where an upper lid was lowered, what lay between its old and new place (the identity's own
    eye: dark here) becomes eyelid skin."""
    s = 4.0
    pts = geo.mean * np.float32(s)
    img = np.full((512, 512, 3), 0.6, np.float32)
    # a lowered lid over a dark eye
    dark = img.copy()
    for up, lo in fg.EYE_LIDS:
        m = np.zeros(img.shape[:2], np.uint8)
        cv2.fillPoly(m, [np.round(np.concatenate([pts[up], pts[lo][::-1]])).astype(np.int32)], 1)
        dark[m > 0] = 0.1
    shut = fg.open_eyes(pts, (0.0, 0.0))
    out = fg.draw_eyes(dark, shut, s, before=pts)
    up, lo = fg.EYE_LIDS[0]
    m = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(m, [np.round(np.concatenate([pts[up], pts[lo][::-1]])).astype(np.int32)], 1)
    core = cv2.erode(m, np.ones((3, 3), np.uint8), iterations=2) > 0
    assert np.median(out[core].mean(1)) > 0.45  # skin (0.6 x EYELID_DARK), not the dark eye
    assert np.median(fg.draw_eyes(dark, shut, s)[core].mean(1)) < 0.2  # without `before`: still dark
