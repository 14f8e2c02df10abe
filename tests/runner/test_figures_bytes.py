"""A figure is the same bytes for the same data (PNG and SVG), so a re-rendered results folder
can be compared file for file."""

from runner.report.figures import Canvas, _pyplot


def _draw(folder):
    canvas = Canvas.for_quotas(folder, [1, 0])
    fig, ax = _pyplot().subplots()
    ax.plot([1, 2, 3], [1.0, 2.5, 2.0], "o-")
    canvas.save(fig, "f")
    return {p.suffix: p.read_bytes() for p in canvas.out}


def test_the_same_figure_twice_is_the_same_bytes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = _draw(tmp_path / "a"), _draw(tmp_path / "b")
    assert set(a) == {".png", ".svg"}
    assert a == b
    assert b"<dc:date>" not in a[".svg"]
