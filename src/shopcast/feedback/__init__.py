"""Feedback: attribution of clicks and purchases to what was shown, online metrics.

- ``attribution``: impressions (with ``recommendation_id``) joined with clicks, carts
  and purchases (direct, or last click within a window);
- ``metrics``: windowed CTR, conversion, RPM, click position, coverage, diversity;
- ``tracker``: recent feedback from the event log, attributed on demand (one per store);
- ``prometheus``: ``/metrics`` (request counts, latency histograms, online metrics).
"""

from shopcast.feedback.attribution import attribute
from shopcast.feedback.metrics import window_metrics

__all__ = ["attribute", "window_metrics"]
