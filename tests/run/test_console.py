"""Progress: a bar on a terminal; without one, a summary line for long work; nothing with -q."""

import importlib

from confidently.run.console import configure_logging, progress

console_module = importlib.import_module("confidently.run.console")  # the package's `console` is the Console


def test_long_work_off_a_terminal_ends_in_one_summary_line(monkeypatch, capsys):
    monkeypatch.setattr(console_module, "stderr_is_terminal", lambda: False)
    configure_logging()
    monkeypatch.setattr(console_module, "SUMMARY_AFTER_S", 0.0)
    assert list(progress(range(7), 7, "rendering")) == list(range(7))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "rendering: 7 in" in lines[0] and "/s)" in lines[0]
    monkeypatch.setattr(console_module, "SUMMARY_AFTER_S", 3600.0)  # quick work says nothing
    assert list(progress(range(3), 3, "rendering")) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_quiet_silences_the_summary(monkeypatch, capsys):
    monkeypatch.setattr(console_module, "stderr_is_terminal", lambda: False)
    monkeypatch.setattr(console_module, "SUMMARY_AFTER_S", 0.0)
    configure_logging(quiet=True)
    try:
        assert list(progress(range(4), 4, "training")) == [0, 1, 2, 3]
        assert capsys.readouterr().err == ""
    finally:
        configure_logging()
