import pytest

from edge.tiling import VIEW_NAMES, View, view_boxes


@pytest.mark.parametrize("w,h,frac,expected", [
    (100, 100, 0.6, [("whole", 0, 0, 100, 100), ("top_left", 0, 0, 60, 60), ("top_right", 40, 0, 100, 60),
                     ("bottom_left", 0, 40, 60, 100), ("bottom_right", 40, 40, 100, 100),
                     ("centre", 20, 20, 80, 80)]),
    (500, 375, 0.6, [("whole", 0, 0, 500, 375), ("top_left", 0, 0, 300, 225), ("top_right", 200, 0, 500, 225),
                     ("bottom_left", 0, 150, 300, 375), ("bottom_right", 200, 150, 500, 375),
                     ("centre", 100, 75, 400, 300)]),
    (1920, 1080, 0.5, [("whole", 0, 0, 1920, 1080), ("top_left", 0, 0, 960, 540),
                       ("top_right", 960, 0, 1920, 540), ("bottom_left", 0, 540, 960, 1080),
                       ("bottom_right", 960, 540, 1920, 1080), ("centre", 480, 270, 1440, 810)]),
    (1, 1, 0.6, [("whole", 0, 0, 1, 1)] + [(n, 0, 0, 1, 1) for n in VIEW_NAMES[1:]]),
    (3000, 2, 0.6, [("whole", 0, 0, 3000, 2), ("top_left", 0, 0, 1800, 1), ("top_right", 1200, 0, 3000, 1),
                    ("bottom_left", 0, 1, 1800, 2), ("bottom_right", 1200, 1, 3000, 2),
                    ("centre", 600, 0, 2400, 1)]),
])
def test_view_boxes_table(w, h, frac, expected):
    assert view_boxes(w, h, frac) == [View(*e) for e in expected]


def test_views_stay_inside_and_have_pixels():
    for w in (1, 2, 3, 7, 31, 32, 33, 640, 4001):
        for h in (1, 5, 64, 481):
            for v in view_boxes(w, h):
                assert 0 <= v.x0 < v.x1 <= w and 0 <= v.y0 < v.y1 <= h, (w, h, v)


def test_no_tiling_is_whole_only():
    assert view_boxes(640, 480, tiling=False) == [View("whole", 0, 0, 640, 480)]


@pytest.mark.parametrize("w,h,frac", [(0, 10, 0.6), (10, 0, 0.6), (10, 10, 0.0), (10, 10, 1.5)])
def test_invalid_geometry(w, h, frac):
    with pytest.raises(ValueError):
        view_boxes(w, h, frac)
