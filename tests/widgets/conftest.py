"""Fixtures shared by the widget tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def errors():
    """Messages of the error notifications napari shows while the test runs."""
    from napari.utils.notifications import notification_manager

    seen: list = []

    def keep(notification) -> None:
        if "error" in str(getattr(notification, "severity", "")).lower():
            seen.append(str(notification.message))

    notification_manager.notification_ready.connect(keep)
    yield seen
    notification_manager.notification_ready.disconnect(keep)
