"""`python -m esper.simic.curve`: the learning curve from a training's simic.pt, and one line
(exit 2) for what is not one (each was a traceback)."""

from __future__ import annotations

import os

import pytest
import torch

from esper.simic.curve import main
from esper.simic.train import CURVE_PANELS, FORMAT


def checkpoint(rows: int) -> dict[str, object]:
    """simic.pt as a training saves it (`save` in esper.simic.train), `rows` updates logged."""
    history = [
        {"update": float(i), **{key: 0.01 * i for key, _ in CURVE_PANELS}} for i in range(rows)
    ]
    return {
        "format": FORMAT,
        "update": rows,
        "settings": {},
        "weights": {},
        "optimizer": {},
        "generator": torch.Generator().get_state(),
        "rng": [3, [0], None],
        "baselines": {},
        "history": history,
    }


def test_the_curve_is_drawn_from_the_logged_rows(tmp_path) -> None:
    torch.save(checkpoint(25), tmp_path / "simic.pt")
    main([str(tmp_path), "--out", str(tmp_path / "curve.png")])
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # helper-found: given simic.pt itself, the figure was to go inside it ("File exists")
    main([str(tmp_path / "simic.pt")])
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("make", "out", "said"),
    [
        (None, "c.png", "not a Simic checkpoint (No such file or directory, ENOENT)"),
        ({"history": []}, "c.png", "not a Simic checkpoint (no esper-simic/1 header)"),
        (
            "text",
            "c.png",
            "not a Simic checkpoint (not a file torch.save wrote: it begins b'not ')",
        ),
        # helper-found: a FIFO (or a symlink loop) at simic.pt blocked the reader for ever
        ("fifo", "c.png", "not a Simic checkpoint (not a regular file)"),
        ("loop", "c.png", "not a Simic checkpoint (Too many levels of symbolic links, ELOOP)"),
        (checkpoint(0), "c.png", "no update was logged yet"),
        (checkpoint(3), "c.txt", "allowed: a file ending in .png, .svg, .pdf"),
        (checkpoint(3), "c", "allowed: a file ending in"),
        (checkpoint(3), "simic.pt/c.png", "cannot write the figure there"),
        # helper-found: a KeyError traceback; an update of -5 resumed to "-250%"
        (
            {**checkpoint(1), "history": [{"episode/return": 0.1}]},
            "c.png",
            "a damaged Simic checkpoint (a history row lacks a number for update, episode/val_gain",
        ),
        ({**checkpoint(2), "update": -5}, "c.png", "a damaged Simic checkpoint (update -5 with 2"),
        ({**checkpoint(2), "history": [1, 2]}, "c.png", "a history row is a int"),
        ({**checkpoint(2), "update": 3}, "c.png", "(update 3 with 2 history rows)"),
        # helper-found: a run's directory was "No such file or directory" alone
        ("run", "c.png", "holds a run (summary.json, events.jsonl), not a policy training"),
    ],
)
def test_what_is_no_curve_is_one_line(tmp_path, capsys, make, out, said) -> None:
    if make == "text":
        (tmp_path / "simic.pt").write_text("not a checkpoint")
    elif make == "fifo":
        os.mkfifo(tmp_path / "simic.pt")
    elif make == "loop":
        (tmp_path / "simic.pt").symlink_to(tmp_path / "simic.pt")
    elif make == "run":
        (tmp_path / "summary.json").write_text("{}")
        (tmp_path / "events.jsonl").write_text("")
    elif make is not None:
        torch.save(make, tmp_path / "simic.pt")
    with pytest.raises(SystemExit) as ended:
        main([str(tmp_path), "--out", str(tmp_path / out)])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err, err
