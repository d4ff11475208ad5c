"""Stage lines reach the run's log file whether or not the screen shows them."""

import logging

from briarpatch._runlog import stage


def test_a_stage_line_reaches_the_log_file_even_when_the_screen_has_a_progress_bar(tmp_path, capsys):
    handler = logging.FileHandler(tmp_path / "train.log")
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        stage("[train] epoch 0, shown", show=True)
        stage("[train] epoch 1, behind a progress bar", show=False)
    finally:
        root.removeHandler(handler)
        handler.close()
    kept = (tmp_path / "train.log").read_text()
    assert "[train] epoch 0, shown" in kept and "[train] epoch 1, behind a progress bar" in kept
    assert capsys.readouterr().out == "[train] epoch 0, shown\n"


def test_without_a_log_file_a_stage_line_is_only_printed(capsys):
    stage("[evaluate] embedding clean test: 4 images, 0 s")  # no Hydra run: nothing else to write
    assert capsys.readouterr().out == "[evaluate] embedding clean test: 4 images, 0 s\n"
