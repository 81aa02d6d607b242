"""Shopcast: real-time personalized recommendations and push for online shops."""

from shopcast.domain import Event, EventType, Item, Recommendation, User

__version__ = "0.1.0"

__all__ = ["Event", "EventType", "Item", "Recommendation", "User", "__version__"]
