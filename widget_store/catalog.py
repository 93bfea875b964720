"""What the checkout route remembers of the catalog between requests.

Products are added to the catalog (by migrations and the seeds' catalog) and never
removed, so a product the store has once found stays in it. The checkout route checks a
cart against the products this process has found already, and reads the catalog only
for the ones it has not seen: a cart of familiar products costs no read at all. Prices
are not remembered: `place_order` reads them in its own transaction.

Should an operator delete a product by hand, a checkout of it is still refused:
`place_order` finds no price, and the saga cancels the order as `unknown_product`.
"""

from __future__ import annotations

from collections.abc import Iterable


class KnownProducts:
    """Product IDs found in the catalog by this process (it only grows)."""

    def __init__(self) -> None:
        self._ids: set[int] = set()

    def unseen(self, product_ids: Iterable[int]) -> list[int]:
        """Those of `product_ids` not found yet, in the order given."""
        return [product_id for product_id in product_ids if product_id not in self._ids]

    def found(self, product_ids: Iterable[int]) -> None:
        """Remember products just read from the catalog."""
        self._ids.update(product_ids)
