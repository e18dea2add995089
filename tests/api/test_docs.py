"""Generated reference documents stay in step with the code."""

from __future__ import annotations

from pathlib import Path

from maintlink.domain.event_types import EVENT_TYPES, EXAMPLES
from maintlink.errors import render_errors_markdown
from maintlink.webhooks.reference import update_document

DOCS = Path(__file__).parents[2] / "docs"


def test_errors_doc_is_current() -> None:
    assert (DOCS / "errors.md").read_text() == render_errors_markdown()


def test_webhooks_doc_is_current() -> None:
    text = (DOCS / "webhooks.md").read_text()
    assert text == update_document(text)
    for name in EVENT_TYPES:
        assert f"### `{name}`" in text


def test_examples_match_their_models() -> None:
    assert set(EXAMPLES) == set(EVENT_TYPES)
    for name, model in EVENT_TYPES.items():
        model.model_validate(EXAMPLES[name])


def test_data_model_doc_is_current() -> None:
    from maintlink.datamodel_doc import update_document as update_data_model

    text = (DOCS / "data-model.md").read_text()
    assert text == update_data_model(text)
