"""docs/config.md is generated from the settings classes: every key documented, the page current."""

import pytest

pytest.importorskip("torch")

from trainer.config_doc import DOC_PATH, main, parameter_docs, render, undocumented


def test_every_setting_has_a_description():
    assert undocumented() == []


def test_docs_config_md_is_current():
    assert DOC_PATH.read_text(encoding="utf-8") == render(), "run: python -m trainer.config_doc --write"
    assert main(["--check"]) == 0


def test_parameter_docs_reads_shared_lines():
    class Example:
        """Example.

        Parameters
        ----------
        a, b : float
            Two numbers
            over two lines.
        c : {"x", "y"}
            A choice.

        Returns
        -------
        nothing
        """

    assert parameter_docs(Example) == {"a": ("float", "Two numbers over two lines."),
                                       "b": ("float", "Two numbers over two lines."),
                                       "c": ('{"x", "y"}', "A choice.")}
