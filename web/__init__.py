"""The search page and the embeddable "find similar" widget, served by the API."""
